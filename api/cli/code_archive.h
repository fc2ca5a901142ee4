// `--code PATH` → what FunctionConfig carries: a single file as is, a .zip as
// is, a directory packed as a tar archive in memory.
//
// Packing uses libarchive, loaded with dlopen only when a directory is packed
// (as crun loads libcriu): `stoke run` and the other verbs never pay for
// loading it.
#pragma once

#include <string>

#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"

namespace stoke::cli {

// Fills code, code_format and code_file_name of `config` from `path`.
Status load_code(const std::string& path, size_t max_bytes, v1::FunctionConfig& config);

}  // namespace stoke::cli
