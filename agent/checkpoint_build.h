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

Result<image::ImageInfo> build_checkpoint_image(Spawner& spawner, const InstanceSpec& spec,
                                                const std::string& images_dir, std::chrono::milliseconds timeout);

}  // namespace stoke::agent
