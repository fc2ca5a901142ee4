// Checkpoint images: turning a raw dump into an immutable, content-addressed
// image, reading and validating images, and deciding whether this host can
// restore one. docs/checkpoint.md describes the format and the restore path.
//
// Flow for the agent:
//   1. give the runtime a writable regular file as its dump fd; the runtime
//      calls stoke_snapshot.checkpoint(fd) (libstoke_checkpoint.so) and the
//      file then holds a raw dump;
//   2. finalize_image(dump_fd, images_dir, labels) -> images_dir/<sha256>.img
//      (mode 0444, written to a temporary file, fsynced, renamed; never
//      modified afterwards);
//   3. before each restore (or once per image and host), read_image +
//      check_compatible; on any error, cold start instead;
//   4. spawn /runtime/restorer/stoke-restore as the sandbox's command with the
//      image open read-only on fd kRestoreImageFd (4), the instance's pipes on
//      0-3, and the same binds as the checkpointed sandbox. Exit codes 111-118
//      mean the restore was refused (restore_abi.h); fall back to cold start.
//
// Library split: stoke_image_format (read, inspect, compatibility; what the
// CLI needs) and stoke_image (adds finalize/write, which need SHA-256).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/image/image.pb.h"
#include "sandbox/image/restore_abi.h"
#include "sandbox/image/restore_table.h"

namespace stoke::image {

using Manifest = v1::Manifest;

// What the caller knows about the image that the process does not.
struct ImageLabels {
  std::string function_id;       // free-form: the function (or runtime) this is an image of
  std::string function_version;  // free-form
  std::map<std::string, std::string> extra;
};

struct ImageInfo {
  std::string path;        // images_dir + "/" + sha256 + ".img"
  std::string sha256;      // of the whole file (64 hex digits)
  uint64_t size_bytes = 0;  // file size (zero pages included)
  uint64_t disk_bytes = 0;  // allocated on disk (zero pages are holes)
  bool reused = false;      // an identical image was already there
  Manifest manifest;
};

// An image as read from disk: header, manifest and the raw restore table.
struct LoadedImage {
  FileHeader header{};
  Manifest manifest;
  std::string table;  // header.table_length bytes
  const TableHeader& table_header() const { return *reinterpret_cast<const TableHeader*>(table.data()); }
};

// Raw dump (from libstoke_checkpoint.so, read from offset 0 of dump_fd) ->
// final image under images_dir (created if missing). Validates the dump first.
Result<ImageInfo> finalize_image(int dump_fd, const std::string& images_dir, const ImageLabels& labels);

// Writes a new image from a manifest, a restore table and the data area
// [data_offset, data_offset + data_length) of data_fd. finalize_image uses it;
// tools and tests use it to rewrite an image with an edited table/manifest.
// The manifest's table_hash is (re)computed here.
Result<ImageInfo> write_image(const std::string& images_dir, Manifest manifest, const std::string& table,
                              int data_fd, uint64_t data_offset, uint64_t data_length);

// Validates magic, version, header hash, offsets and lengths against the
// file size (truncation), the manifest+table hash, the manifest, and the
// table's bounds. Errors say what is wrong: "image /x.img: image is truncated ...".
Result<LoadedImage> load_image(const std::string& path);
Result<Manifest> read_image(const std::string& path);

// Where a path inside the sandbox comes from on the host (a bind mount), for
// checking the identity of mapped files from outside the sandbox. The longest
// matching `inside` prefix wins.
struct PathPrefix {
  std::string inside;
  std::string host;
};

// Can this host restore the image? Kernel release and version, vdso size and
// hash, CPU identity (features, XSAVE layout), and every mapped file's
// identity (dev, ino, size, mtime). The error names the first mismatch.
// The manifest is untrusted (its paths come from the dump a sandbox wrote):
// a mapped file must lie under one of `binds` (the sandbox's own, system
// directories included) and is looked up beneath that bind's host directory
// without following symlinks; an image naming any other path is refused
// without the host being asked about it.
Status check_compatible(const Manifest& manifest, const std::vector<PathPrefix>& binds = {});

// The manifest as indented JSON (what `stoke image inspect` prints).
std::string manifest_json(const Manifest& manifest);

// This host's side of check_compatible.
struct HostIdentity {
  std::string kernel_release;
  std::string kernel_version;
  uint64_t vdso_hash = 0;
  uint64_t vdso_size = 0, vvar_size = 0, vvar_vclock_size = 0;
  CpuIdentity cpu{};
};
Result<HostIdentity> host_identity();

// SHA-256 of a whole file, 64 lowercase hex digits.
Result<std::string> sha256_file(const std::string& path);

// 16 lowercase hex digits.
std::string hex64(uint64_t v);

}  // namespace stoke::image
