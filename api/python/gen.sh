#!/usr/bin/env bash
# api/python/gen.sh [OUT_DIR]: generate api_pb2.py, the Python classes of
# api/proto/stoke/v1/api.proto, into OUT_DIR (default: $STOKE_PY_GEN, else
# build/python in the repository). stoke_client.py imports it from
# $STOKE_PY_GEN, or from its own directory. Nothing is generated at import time
# so the client never writes into the source tree or needs protoc to run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-${STOKE_PY_GEN:-$repo/build/python}}
if ! command -v protoc >/dev/null; then
  echo "gen.sh: protoc not found (Debian: apt-get install protobuf-compiler)" >&2
  exit 1
fi
mkdir -p "$out"
# The proto's own directory as the import path gives a flat module name,
# api_pb2, instead of a stoke/v1/ package tree.
protoc --proto_path="$repo/api/proto/stoke/v1" --python_out="$out" "$repo/api/proto/stoke/v1/api.proto"
echo "$out/api_pb2.py"
