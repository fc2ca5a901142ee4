// Helpers for checkpoint/restore tests and the restore benchmark: make an image
// of tests/priv/restore_driver.py in a real sandbox, restore it in others, and
// talk to the restored copies one JSON line at a time.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/image/image.h"
#include "sandbox/spawner.h"

namespace stoke::test {

// build/share/stoke/runtimes (bound at /runtime in every sandbox here).
std::string runtimes_dir();
// The sandbox both checkpoint and restores run in: runtimes at /runtime, the
// driver at /code, stoke-probe at /probe, python3 with PYTHONPATH=/runtime/python.
SandboxSpec restore_test_spec(uint32_t host_id);

// Runs the driver in a sandbox of `spawner`, lets it checkpoint itself, and
// finalizes the dump into images_dir.
Result<image::ImageInfo> make_driver_image(Spawner& spawner, const std::string& images_dir);

// A restored (or any) sandbox with its stdio on pipes.
class Instance {
 public:
  // Spawns stoke-restore in `spec` with the image on fd 4.
  static Result<std::unique_ptr<Instance>> restore(Spawner& spawner, SandboxSpec spec, const std::string& image);
  static Result<std::unique_ptr<Instance>> spawn(Spawner& spawner, SandboxSpec spec);

  Sandbox& sandbox() { return *sandbox_; }
  // One line from stdout as JSON; error on EOF, timeout or bad JSON (the
  // error carries stderr so far).
  Result<nlohmann::json> read_json(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Status send(const nlohmann::json& command);
  Result<nlohmann::json> request(const nlohmann::json& command,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void close_stdin() { stdin_.reset(); }
  std::string drain_stderr();
  Result<ExitStatus> wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  std::unique_ptr<Sandbox> sandbox_;
  unique_fd stdin_, stdout_, stderr_;
  std::string out_buf_, err_buf_;
};

}  // namespace stoke::test
