// Building a Python function's checkpoint image (docs/checkpoint.md): its
// runtime runs in a sandbox built exactly like a cold instance's, loads the
// code (imports and module-level init), dumps itself at that ready point
// (stoke_runtime.py --checkpoint) and exits; the dump becomes an immutable,
// content-addressed image. Blocking: runs on a worker.
#pragma once

#include <chrono>
#include <string>

#include "agent/instance.h"
#include "sandbox/image/image.h"

namespace stoke::agent {

// `key` (image_key) goes into the image's labels, with the function, its code
// and entry, so a restore can tell whose image it holds.
Result<image::ImageInfo> build_checkpoint_image(Spawner& spawner, const InstanceSpec& spec,
                                                const std::string& images_dir, std::chrono::milliseconds timeout,
                                                const std::string& key);

// The most disk a checkpoint build's dump may take (allocated blocks, not its
// sparse size): the function's memory limit plus 32 MiB for the table and
// page alignment. A build past it is killed and refused.
uint64_t checkpoint_dump_limit(const InstanceSpec& spec);

// What an image is an image of: a process that loaded exactly this code
// (sha256), entry and environment, for this function, with this runtime shim.
// A function deleted and created again under the same name, or updated to
// other code or env, gets another key, so it can never be served the old
// tenant's process image (with its env secrets), whatever the index says.
// runtime_id: runtime_shim_id() of the agent's runtimes_dir.
std::string image_key(const InstanceSpec& spec, const std::string& runtime_id);

// SHA-256 over the Python runtime shim files (runtimes_dir/python/*) and the
// agent version: images made by another shim are not reused.
std::string runtime_shim_id(const std::string& runtimes_dir);

// Refuses an image whose labels say it was made for another function, code,
// entry or key than the instance it would start (checked before every first
// restore of an image file for a key).
Status check_image_labels(const image::Manifest& manifest, const InstanceSpec& spec, const std::string& key);

}  // namespace stoke::agent
