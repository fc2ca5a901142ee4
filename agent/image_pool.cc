// The agent's checkpoint/restore policy (docs/checkpoint.md): a Python
// function's image is built in the background after its first successful
// activation (or at once with `fn create --checkpoint`) and then serves its
// cold starts (startKind restore), across agent restarts too. An image this
// host cannot restore, or a restore that fails, falls back to a cold start;
// the image is dropped and built again later. Runs on the event-loop thread;
// builds and restores on workers.
#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include "agent/agent_internal.h"
#include "agent/checkpoint_build.h"
#include "rootfs/lean_rootfs.h"

namespace stoke::agent {

using detail::ms_between;
using detail::ms_since;

namespace {

// Where the files an image maps come from on the host: the sandbox's binds,
// the system directories of its lean rootfs included. check_compatible looks
// at nothing outside them.
std::vector<image::PathPrefix> binds_of(const InstanceSpec& spec) {
  static const std::vector<image::PathPrefix> system = [] {
    std::vector<image::PathPrefix> out;
    for (const auto& e : host_lean_rootfs())
      if (e.kind == RootfsEntry::Kind::kBindDir || e.kind == RootfsEntry::Kind::kBindFile)
        out.push_back({e.path, e.source});
    return out;
  }();
  std::vector<image::PathPrefix> binds = system;
  binds.push_back({"/runtime", spec.runtimes_dir});
  binds.push_back({"/code", spec.code_dir});
  return binds;
}

}  // namespace

bool Agent::image_ready_for(const Running& run) const {
  return settings_.checkpoints && images_ && run.spec.runtime == v1::PYTHON && !run.force_cold &&
         images_->image_for(run.spec.function, run.spec.version, run.image_key).has_value();
}

void Agent::ensure_image(const InstanceSpec& spec, const std::string& key) {
  if (!settings_.checkpoints || !images_ || stopping_ || spec.runtime != v1::PYTHON || key.empty()) return;
  if (images_->image_for(spec.function, spec.version, key)) return;
  // One build at a time per function; never again for a version that cannot be checkpointed.
  if (!images_building_.may_build(spec.function, spec.version)) return;
  images_building_.started(spec.function, spec.version);
  const uint64_t generation = generation_[spec.function];
  std::chrono::milliseconds timeout{std::max<uint64_t>(30'000, settings_.default_timeout_ms)};
  workers_->submit([this, spec, generation, timeout, key](Worker& worker) {
    auto t0 = std::chrono::steady_clock::now();
    auto built = std::make_shared<Result<image::ImageInfo>>(
        build_checkpoint_image(*worker.spawner, spec, images_->dir(), timeout, key));
    const double ms = ms_since(t0);
    loop_->post([this, spec, generation, built, ms, key] {
      auto waiting = images_building_.finished(spec.function);
      bool current = generation_[spec.function] == generation && !stopping_;
      if (!built->ok()) {
        spdlog::warn("function {} v{}: no checkpoint image: {}", spec.function, spec.version, built->error().message());
        // The same code would fail the same way: not again for this version.
        images_building_.refuse(spec.function, spec.version, built->error().message());
      } else if (current) {
        std::string sha = built->value().sha256;
        workers_->submit([this, spec, sha, key](Worker&) {
          Status s = images_->record(spec.function, spec.version, key, sha);
          if (!s.ok()) spdlog::warn("function {}: recording its image failed: {}", spec.function, s.error().message());
        });
        spdlog::info("function {} v{}: checkpoint image {} ({:.1f} MB, {:.0f} ms)", spec.function, spec.version,
                     sha.substr(0, 12), static_cast<double>(built->value().size_bytes) / 1e6, ms);
      }
      // Whoever waited for it (--start restore) restores now, or starts cold.
      for (auto& run : waiting) {
        if (built->ok() && current) {
          run->pending_image = built->value().path;
          restore_instance(run);
        } else {
          run->force_restore = false;
          spawn_cold(run);
        }
      }
    });
  });
}

void Agent::wait_for_image(const std::shared_ptr<Running>& run) {
  ensure_image(run->spec, run->image_key);
  if (images_building_.building(run->spec.function, run->spec.version)) {
    images_building_.wait(run->spec.function, run);
    return;
  }
  if (image_ready_for(*run)) return restore_instance(run);
  run->force_restore = false;  // none can be made (refused, disabled): cold
  spawn_cold(run);
}

void Agent::restore_instance(const std::shared_ptr<Running>& run) {
  std::string path = run->pending_image;
  const std::string& key = run->image_key;
  if (path.empty()) {
    auto found = images_ ? images_->image_for(run->spec.function, run->spec.version, key) : std::nullopt;
    if (!found) {
      run->force_restore = false;
      return spawn_cold(run);
    }
    path = *found;
  }
  run->record.set_wait_ms(ms_between(run->queued, std::chrono::steady_clock::now()));
  run->restore_requested = std::chrono::steady_clock::now();
  // Verified per image file and key: the labels are part of what is checked.
  const std::string verified_as = path + "\n" + key;
  const ino_t verified_ino = images_building_.verified(verified_as).value_or(0);
  workers_->submit([this, run, path, key, verified_as, verified_ino](Worker& worker) {
    // The first restore of an image file in this agent checks it here (a
    // kernel or library changed since it was made: a clear reason, no spawn).
    // Later ones leave it to the restorer, which checks the same facts again
    // itself (~0.4 ms saved per restore); its refusal also falls back to cold.
    struct stat st {};
    ino_t ino = ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
    Status compatible;
    if (ino == 0 || ino != verified_ino) {
      auto manifest = image::read_image(path);
      compatible = manifest.ok() ? check_image_labels(manifest.value(), run->spec, key) : Status(manifest.error());
      if (compatible.ok()) compatible = image::check_compatible(manifest.value(), binds_of(run->spec));
    }
    auto instance = std::make_shared<Result<std::unique_ptr<Instance>>>(
        compatible.ok() ? Instance::restore(*worker.spawner, run->spec, path)
                        : Result<std::unique_ptr<Instance>>(compatible.error()));
    loop_->post([this, run, verified_as, ino, instance] {
      if (!instance->ok()) return restore_failed(run, instance->error().message());
      images_building_.set_verified(verified_as, ino);
      run->instance = std::move(instance->value());
      run->record.set_start_kind(v1::RESTORE);
      run->record.set_init_ms(run->instance->init_ms());  // until ready: set in finish()
      // The request goes in now; the restored runtime reads it once ready.
      converse(run, /*first_line_is_ready=*/true);
    });
  });
}

void Agent::restore_failed(const std::shared_ptr<Running>& run, const std::string& why) {
  const std::string& key = run->image_key;
  images_building_.forget_verified(run->pending_image + "\n" + key);
  if (auto path = images_ ? images_->image_for(run->spec.function, run->spec.version, key) : std::nullopt)
    images_building_.forget_verified(*path + "\n" + key);
  spdlog::warn("function {} activation {}: restore failed, starting cold; image dropped: {}", run->spec.function,
               run->record.activation_id(), why);
  std::string fn = run->spec.function;
  uint32_t version = run->spec.version;
  workers_->submit([this, fn, version](Worker&) { images_->drop(fn, version); });
  run->force_restore = false;
  spawn_cold(run);
}

}  // namespace stoke::agent
