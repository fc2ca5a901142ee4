#include "agent/agent.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "agent/agent_internal.h"
#include "agent/checkpoint_build.h"
#include "agent/json_limits.h"
#include "agent/kernel_features.h"
#include "agent/names.h"
#include "api/wire/protocol.h"
#include "agent/namespace_scope.h"
#include "api/wire/responses.h"
#include "sandbox/base/file_util.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::agent {

using detail::error_json;
using detail::ms_between;
using detail::ms_since;
using detail::now_ms;

namespace {

using wire::error_response;

v1::Response error_response(uint64_t id, const Error& e) {
  return error_response(id, error_code(error_kind(e)), e.message());
}

// The exec runtime's executable inside the sandbox: the entry (for a single
// uploaded file, its name), or OpenWhisk's conventional "exec".
std::string exec_path(const v1::Function& fn) { return "/code/" + (fn.entry().empty() ? "exec" : fn.entry()); }

// What a language runtime loads, as a path inside the sandbox: the code
// directory when it is a package (__main__.py; package.json or index.js), else
// the one source file it holds.
Result<std::string> language_code_path(v1::Runtime runtime, const std::string& host_dir) {
  const bool python = runtime == v1::PYTHON;
  for (const char* marker : python ? std::vector<const char*>{"__main__.py"} : std::vector<const char*>{"package.json", "index.js"})
    if (path_exists(host_dir + "/" + marker)) return std::string("/code");
  std::string found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(host_dir, ec)) {
    std::string name = e.path().filename().string();
    bool source = name.size() > 3 && name.compare(name.size() - 3, 3, python ? ".py" : ".js") == 0;
    if (e.is_regular_file() && source) {
      if (!found.empty()) {
        found.clear();
        break;
      }
      found = name;
    }
  }
  if (found.empty())
    return plain_error("find the function's code",
                       python ? "the code needs a __main__.py or exactly one .py file"
                              : "the code needs a package.json main, an index.js or exactly one .js file");
  return "/code/" + found;
}

// Where the runtime shims are: configured, or share/stoke/runtimes beside the
// binary's bin/ (build tree and install tree alike).
std::string default_runtimes_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "/usr/local/share/stoke/runtimes";
  return (exe.parent_path().parent_path() / "share" / "stoke" / "runtimes").string();
}

}  // namespace

std::string new_activation_id() {
  // 6 bytes of the wall clock in ms (big-endian), then 10 random bytes.
  unsigned char raw[16];
  auto ms = static_cast<uint64_t>(now_ms());
  for (int i = 0; i < 6; ++i) raw[i] = static_cast<unsigned char>(ms >> (8 * (5 - i)));
  size_t got = 6;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string id;
  id.reserve(2 * sizeof raw);
  for (unsigned char b : raw) {
    id.push_back(hex[b >> 4]);
    id.push_back(hex[b & 15]);
  }
  return id;
}

void fill_billing(v1::Usage& usage, double billed_source_ms, uint64_t unit_ms, uint64_t memory_bytes) {
  uint64_t unit = std::max<uint64_t>(unit_ms, 1);
  uint64_t billed = static_cast<uint64_t>(std::ceil(std::max(billed_source_ms, 0.0) / static_cast<double>(unit))) * unit;
  usage.set_billed_ms(billed);
  usage.set_gb_seconds(static_cast<double>(billed) / 1000.0 * static_cast<double>(memory_bytes) / double(1ULL << 30));
}

// One agent per state dir: a second one would share the registry and take
// the first one's sandboxes for a crashed agent's leftovers. The lock is the
// kernel's (flock), so it goes with the process however it ends; a child that
// still holds the inherited description for a moment after a crash is waited
// out.
static Result<unique_fd> lock_state_dir(const std::string& state_dir) {
  std::string path = state_dir + "/agent.lock";
  unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return sys_error("open " + path);
  for (int attempt = 0;; ++attempt) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return fd;
    if (errno != EWOULDBLOCK) return sys_error("lock " + path);
    if (attempt == 100)  // 5 s
      return plain_error("start", "another stoked is running on the state dir " + state_dir + " (" + path +
                                      " is locked); stop it first or give this one its own state_dir");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<std::unique_ptr<Agent>> Agent::start(const AgentSettings& settings) {
  std::unique_ptr<Agent> a(new Agent());
  a->settings_ = settings;
  a->idle_.set_keep_alive(settings.keep_alive);
  a->memory_ = MemoryLedger(settings.memory_budget_bytes, settings.zygote_memory_budget_bytes);
  a->memory_.on_error([](const std::string& what) { spdlog::error("memory accounting error: {}", what); });
  if (a->settings_.runtimes_dir.empty()) a->settings_.runtimes_dir = default_runtimes_dir();
  a->started_ms_ = static_cast<uint64_t>(now_ms());
  a->features_ = probe_kernel_features();
  // Root's alone, also when it already exists wider (packaging used 0711):
  // sandboxes get their code, runtimes and images through binds the spawner
  // clones as host root, so no other uid ever needs to walk this tree.
  STOKE_TRY(make_private_dir(settings.state_dir, 0700));
  auto lock = lock_state_dir(settings.state_dir);
  if (!lock.ok()) return lock.error();
  a->state_lock_ = std::move(lock.value());

  auto loop = EventLoop::create();
  if (!loop.ok()) return loop.error();
  a->loop_ = std::move(loop.value());

  auto registry = Registry::open(settings.state_dir + "/registry.db");
  if (!registry.ok()) return registry.error().context("open registry");
  a->registry_ = std::move(registry.value());
  auto namespaces = a->registry_->list_namespaces();
  if (!namespaces.ok()) return namespaces.error().context("load namespaces");
  for (const auto& row : namespaces.value()) a->namespace_keys_.set(row.name, {row.key_uuid, row.key_sha256});
  a->records_ = std::make_unique<ActivationWriter>(*a->registry_, *a->loop_, kBeginHold, kRecordLinger);
  auto uids = HostUids::open(settings.state_dir + "/host_uids", host_ids_for_functions(a->settings_.host_ids));
  if (!uids.ok()) return uids.error().context("open host uid table");
  a->host_uids_ = std::move(uids.value());
  // Reconcile after a crash. First the activation log: finished records
  // whose registry rows may not have been written (replaying one that was
  // changes nothing). Then activations that were running (rows left
  // running, and journaled ones without a row) did not finish. Each file is
  // emptied only once the registry has what it held.
  auto activation_log = ActivationLog::open(settings.state_dir + "/activations.log");
  if (!activation_log.ok()) return activation_log.error();
  a->activation_log_ = std::move(activation_log.value());
  auto logged = a->activation_log_->read_all();
  if (!logged.ok()) return logged.error();
  if (!logged->empty()) {
    std::vector<Registry::ActivationWrite> replay;
    replay.reserve(logged->size());
    for (auto& rec : logged.value()) replay.push_back({Registry::ActivationWrite::kFinish, std::move(rec)});
    for (const Status& st : a->registry_->write_activations(replay))
      if (!st.ok()) return st.error().context("replay the activation log");
    spdlog::info("activation log: {} finished record(s) replayed into the registry", replay.size());
  }
  if (Status cleared = a->activation_log_->clear(); !cleared.ok()) return cleared.error();
  auto journal = RunningJournal::open(settings.state_dir + "/running.journal");
  if (!journal.ok()) return journal.error();
  a->journal_ = std::move(journal.value());
  auto journaled = a->journal_->entries();
  if (!journaled.ok()) return journaled.error();
  auto interrupted =
      a->registry_->fail_interrupted_activations("the agent stopped while this activation ran", journaled.value());
  if (!interrupted.ok()) return interrupted.error();
  if (interrupted.value() > 0) spdlog::warn("recorded {} interrupted activation(s) as failed", interrupted.value());
  if (Status cleared = a->journal_->clear(); !cleared.ok()) return cleared.error();

  CodeLimits code_limits;
  code_limits.max_upload_bytes = settings.max_code_bytes;
  code_limits.max_total_bytes = settings.max_code_unpacked_bytes;
  auto code = CodeStore::open(settings.state_dir + "/code", code_limits);
  if (!code.ok()) return code.error().context("open code store");
  a->code_ = std::make_unique<CodeStore>(std::move(code.value()));
  // Prewarmed instances' /code directories of a previous run are stale.
  std::error_code stale;
  std::filesystem::remove_all(settings.state_dir + "/prewarm", stale);
  STOKE_TRY(make_private_dir(settings.state_dir + "/prewarm", 0700));  // each instance's dir below is 0755
  // Code trees half-written when the agent died are dropped.
  auto partial = a->code_->cleanup_partial();
  if (!partial.ok()) return partial.error().context("clean the code store");
  // Trees no current version references (deleted functions, versions
  // replaced by an update): collected here, before serving, when no store()
  // can race and nothing runs an old version.
  auto referenced = a->registry_->referenced_code();
  if (!referenced.ok()) return referenced.error().context("clean the code store");
  auto collected = a->code_->remove_unreferenced(referenced.value());
  if (!collected.ok()) return collected.error().context("clean the code store");
  if (collected.value() > 0) spdlog::info("removed {} unreferenced code tree(s)", collected.value());
  // Checkpoint images survive restarts; their index is read back here (and
  // images nothing names, or half-written ones, removed). Zygotes do not.
  // (state_dir/zygotes held the runtime zygote's work files before each
  // function zygote had a sandbox of its own: removed if an older agent left it.)
  std::filesystem::remove_all(settings.state_dir + "/zygotes", stale);
  if (settings.checkpoints) {
    a->images_ = std::make_unique<ImageStore>(settings.state_dir + "/images", runtime_shim_id(a->settings_.runtimes_dir));
    if (Status s = a->images_->open(); !s.ok()) return s.error().context("open the image store");
    // Only the current version of a function the registry still has keeps
    // its image: a delete or update whose drop a crash cut short is finished
    // here, before anything can restore.
    auto functions = a->registry_->list_functions();
    if (!functions.ok()) return functions.error().context("reconcile the image store");
    std::map<std::string, std::pair<uint32_t, std::string>> current;
    for (const auto& fn : functions->functions())
      if (auto spec = a->instance_spec_for(fn); spec.ok())
        current[fn.name()] = {fn.version(), image_key(spec.value(), a->images_->runtime_id())};
    if (size_t dropped = a->images_->retain(current); dropped > 0)
      spdlog::info("dropped {} checkpoint image(s) of deleted or changed functions", dropped);
    spdlog::info("{} checkpoint image(s) on record", a->images_->size());
  }

  // Sandboxes of a crashed agent died with it (parent-death signal); their
  // cgroups are removed by the spawners the workers create here.
  auto netns = NetnsPool::create(2, 16);
  if (!netns.ok()) return netns.error().context("network namespace pool");
  a->netns_ = netns.value();
  SpawnerOptions spawner_options;
  spawner_options.netns_pool = a->netns_;
  if (!settings.cgroup_root.empty()) {
    // A group given to the agent: v2 only (a v1 host has one per hierarchy).
    struct statfs fs {};
    if (::statfs("/sys/fs/cgroup", &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
      return plain_error("cgroup_root " + settings.cgroup_root, "is for hosts with cgroup v2 alone at /sys/fs/cgroup");
    if (!path_exists(settings.cgroup_root + "/cgroup.controllers"))
      return plain_error("cgroup_root " + settings.cgroup_root, "is not a cgroup v2 group (no cgroup.controllers)");
    spawner_options.cgroup.version = "v2";
    spawner_options.cgroup.v2_self_dir = settings.cgroup_root;
    // The agent does not live there: nothing of its own to move out of the way.
    spawner_options.cgroup.v2_move_self_to_leaf = false;
    spdlog::info("sandboxes' cgroups go beneath {}/stoke (cgroup_root)", settings.cgroup_root);
  }
  auto workers = WorkerPool::start(settings.worker_threads, spawner_options);
  if (!workers.ok()) return workers.error();
  a->workers_ = std::move(workers.value());

  Agent* self = a.get();
  auto server = Server::listen(*a->loop_, settings.socket_path, settings.socket_group, settings.inherited_socket_fd,
                               settings.access, [self](const Peer& peer, v1::Request req, Server::Reply reply) {
                                 self->handle(peer, std::move(req), std::move(reply));
                               },
                               settings.api_limits);
  if (!server.ok()) return server.error();
  a->server_ = std::move(server.value());
  STOKE_TRY(a->loop_->watch_signals({SIGTERM, SIGINT}, [self](int sig) {
    spdlog::info("received {}; stopping", strsignal(sig));
    self->begin_stop();
  }));
  a->loop_->post([self] {
    self->refill_prewarm();
    self->prune_activations_tick();
  });
  spdlog::info("stoked {} listening on {} (state in {})", wire::kAgentVersion, settings.socket_path, settings.state_dir);
  return a;
}

Agent::~Agent() {
  server_.reset();
  workers_.reset();  // joins; every job has finished
  records_.reset();  // writes what is queued
}

Status Agent::run() { return loop_->run(); }

void Agent::request_stop() {
  loop_->post([this] { begin_stop(); });
}

void Agent::set_heartbeat(std::chrono::milliseconds interval, std::function<void()> beat) {
  heartbeat_interval_ = interval;
  heartbeat_ = std::move(beat);
  if (interval.count() > 0) heartbeat_tick();
}

void Agent::heartbeat_tick() {
  if (stopping_ || !heartbeat_) return;
  heartbeat_();
  loop_->timer(heartbeat_interval_, [this](int) { heartbeat_tick(); });
}

void Agent::handle(const Peer& peer, v1::Request request, Server::Reply unscoped_reply) {
  const uint64_t id = request.id();
  if (stopping_) {
    unscoped_reply(error_response(id, v1::Error::UNAVAILABLE, "the agent is stopping"));
    return;
  }
  // The namespace it acts in; its names qualified, and the reply's names
  // shown as that namespace sees them (agent/namespace_scope.h).
  ScopeError denied;
  const RequestScope scope = resolve_scope(settings_.access, peer, request, namespace_keys_, denied);
  if (denied.code == v1::Error::OK) qualify_request(request, scope.ns, denied);
  if (denied.code != v1::Error::OK) return unscoped_reply(error_response(id, denied.code, denied.message));
  Server::Reply reply = [reply = std::move(unscoped_reply)](v1::Response r) {
    present_response(r);
    reply(std::move(r));
  };
  switch (request.body_case()) {
    case v1::Request::kCreateNamespace:
    case v1::Request::kListNamespaces:
    case v1::Request::kDeleteNamespace:
    case v1::Request::kRotateNamespaceKey:
      namespace_request(std::move(request), std::move(reply),
                        scope.operator_ ? std::nullopt : std::optional<std::string>(scope.ns));
      return;
    case v1::Request::kCreateFunction:
      create_or_update(true, std::move(request), std::move(reply));
      return;
    case v1::Request::kUpdateFunction:
      create_or_update(false, std::move(request), std::move(reply));
      return;
    case v1::Request::kGetActivation:
    case v1::Request::kGetActivationLogs: {
      // One in flight is answered from memory: its row may not be written
      // yet (a begin is held back to be folded into its finish).
      const std::string& aid = request.has_get_activation() ? request.get_activation().activation_id()
                                                            : request.get_activation_logs().activation_id();
      // Finished and logged, its row not written yet: the record itself.
      if (auto it = logged_.find(aid); it != logged_.end() && in_namespace(it->second.function(), scope.ns)) {
        v1::Response r;
        r.set_id(request.id());
        if (request.has_get_activation()) {
          *r.mutable_activation() = it->second;
        } else {
          *r.mutable_activation_logs()->mutable_logs() = it->second.logs();
          r.mutable_activation_logs()->set_truncated(it->second.logs_truncated());
        }
        return reply(std::move(r));
      }
      // What its running row says, nothing more: a result is not shown
      // before its record is stored.
      if (auto it = running_.find(aid); it != running_.end() && in_namespace(it->second->record.function(), scope.ns)) {
        v1::Response r;
        r.set_id(request.id());
        if (request.has_get_activation()) {
          const v1::Activation& rec = it->second->record;
          v1::Activation* a = r.mutable_activation();
          a->set_activation_id(rec.activation_id());
          a->set_function(rec.function());
          a->set_version(rec.version());
          a->set_start_ms(rec.start_ms());
          a->set_start_kind(rec.start_kind());
        } else {
          r.mutable_activation_logs();  // logs come with the result
        }
        return reply(std::move(r));
      }
      [[fallthrough]];
    }
    case v1::Request::kListActivations:
      // After the rows of every record logged so far are written: a list
      // sees each activation whose reply went out before it was asked for.
      if (!logged_.empty()) {
        records_->barrier([this, request = std::move(request), reply = std::move(reply), ns = scope.ns](Status) mutable {
          registry_request(std::move(request), std::move(reply), ns);
        });
        return;
      }
      [[fallthrough]];
    case v1::Request::kGetFunction:
    case v1::Request::kListFunctions:
    case v1::Request::kDeleteFunction:
      registry_request(std::move(request), std::move(reply), scope.ns);
      return;
    case v1::Request::kInvoke:
      invoke(std::move(request), std::move(reply));
      return;
    case v1::Request::kGetStatus:
      status(id, std::move(reply));
      return;
    case v1::Request::kHello:
      reply(error_response(id, v1::Error::PROTOCOL_ERROR, "hello was already exchanged"));
      return;
    case v1::Request::BODY_NOT_SET:
      break;
  }
  reply(error_response(id, v1::Error::INVALID_ARGUMENT, "the request has no body (unknown to this agent version?)"));
}

void Agent::registry_request(v1::Request request, Server::Reply reply, std::string ns) {
  // Registry reads and deletes: SQLite, so a worker.
  workers_->submit([this, request = std::move(request), reply = std::move(reply), ns = std::move(ns)](Worker&) mutable {
    // Another namespace's activation is as unknown as one that never was.
    auto own_activation = [&](Result<v1::Activation> act, const std::string& id) -> Result<v1::Activation> {
      if (act.ok() && !in_namespace(act->function(), ns))
        return kind_error(ErrorKind::kNotFound, "get activation '" + id + "'");
      return act;
    };
    v1::Response r;
    r.set_id(request.id());
    Status ok;
    switch (request.body_case()) {
      case v1::Request::kGetFunction: {
        auto f = registry_->get_function(request.get_function().name());
        if (f.ok()) *r.mutable_function() = std::move(f.value());
        else ok = f.error();
        break;
      }
      case v1::Request::kListFunctions: {
        auto l = registry_->list_functions_in(ns);
        if (l.ok()) *r.mutable_function_list() = std::move(l.value());
        else ok = l.error();
        break;
      }
      case v1::Request::kDeleteFunction: {
        ok = registry_->delete_function(request.delete_function().name());
        // Before the reply: no later create of the name may meet them.
        if (ok.ok() && images_) images_->drop_function(request.delete_function().name());
        if (ok.ok()) {
          r.mutable_deleted();
          spdlog::info("function {}: deleted", request.delete_function().name());
        }
        break;
      }
      case v1::Request::kGetActivation: {
        auto act = own_activation(registry_->get_activation(request.get_activation().activation_id()),
                                  request.get_activation().activation_id());
        if (act.ok()) *r.mutable_activation() = std::move(act.value());
        else ok = act.error();
        break;
      }
      case v1::Request::kListActivations: {
        const auto& q = request.list_activations();
        auto l = registry_->list_activations(q.function(), q.limit(), q.page_token(),
                                             q.function().empty() ? std::optional<std::string>(ns) : std::nullopt);
        if (l.ok()) *r.mutable_activation_list() = std::move(l.value());
        else ok = l.error();
        break;
      }
      case v1::Request::kGetActivationLogs: {
        auto act = own_activation(registry_->get_activation(request.get_activation_logs().activation_id()),
                                  request.get_activation_logs().activation_id());
        if (act.ok()) {
          auto* logs = r.mutable_activation_logs();
          *logs->mutable_logs() = act->logs();
          logs->set_truncated(act->logs_truncated());
        } else {
          ok = act.error();
        }
        break;
      }
      default:
        break;
    }
    if (!ok.ok()) r = error_response(request.id(), ok.error());
    bool deleted = r.has_deleted();
    std::string name = request.delete_function().name();
    loop_->post([this, deleted, name, reply = std::move(reply), r = std::move(r)]() mutable {
      if (deleted) {
        function_changed(name);
        if (Status s = host_uids_->release(name); !s.ok())
          spdlog::warn("function {}: its host uid stays assigned: {}", name, s.error().message());
      }
      reply(std::move(r));
    });
  });
}

void Agent::create_or_update(bool create, v1::Request request, Server::Reply reply) {
  const uint64_t id = request.id();
  const std::string name = create ? request.create_function().name() : request.update_function().name();
  const v1::FunctionConfig& cfg = create ? request.create_function().config() : request.update_function().config();
  if (Status s = check_qualified_name(name); !s.ok())
    return reply(error_response(id, v1::Error::INVALID_ARGUMENT, s.error().message()));
  if (cfg.runtime() == v1::RUNTIME_UNSPECIFIED)
    return reply(error_response(id, v1::Error::INVALID_ARGUMENT, "runtime is required (python, node or exec)"));
  if (cfg.memory_bytes() != 0 && (cfg.memory_bytes() < (16ULL << 20) || cfg.memory_bytes() > settings_.max_memory_bytes))
    return reply(error_response(id, v1::Error::INVALID_ARGUMENT,
                                "memory must be between 16M and " + std::to_string(settings_.max_memory_bytes >> 20) + "M"));
  if (cfg.timeout_ms() > settings_.max_timeout_ms)
    return reply(error_response(id, v1::Error::INVALID_ARGUMENT,
                                "timeout must be at most " + std::to_string(settings_.max_timeout_ms) + " ms"));
  if (cfg.concurrency() > settings_.max_concurrency)
    return reply(error_response(id, v1::Error::INVALID_ARGUMENT,
                                "concurrency must be at most " + std::to_string(settings_.max_concurrency)));
  if (cfg.code().size() > settings_.max_code_bytes)
    return reply(error_response(id, v1::Error::RESOURCE_EXHAUSTED,
                                "the code is " + std::to_string(cfg.code().size()) + " bytes; the limit is " +
                                    std::to_string(settings_.max_code_bytes) + " (max_code_bytes)"));
  for (const auto& [key, value] : cfg.env()) {
    if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos ||
        value.find('\0') != std::string::npos)
      return reply(error_response(id, v1::Error::INVALID_ARGUMENT, "environment variable '" + key + "' is not valid"));
  }
  if (cfg.parameters_json().size() + cfg.annotations_json().size() > settings_.max_payload_bytes)
    return reply(error_response(id, v1::Error::RESOURCE_EXHAUSTED,
                                "parameters and annotations together may hold at most " +
                                    std::to_string(settings_.max_payload_bytes) + " bytes (max_payload_bytes)"));
  if (!cfg.parameters_json().empty()) {
    if (Status valid = validate_json_object_bounded(cfg.parameters_json()); !valid.ok())
      return reply(error_response(id, v1::Error::INVALID_ARGUMENT, "parameters: " + valid.error().message()));
  }
  if (!cfg.annotations_json().empty()) {
    if (Status valid = validate_annotations(cfg.annotations_json()); !valid.ok())
      return reply(error_response(id, v1::Error::INVALID_ARGUMENT, valid.error().message()));
  }
  workers_->submit([this, create, name, request = std::move(request), reply = std::move(reply)](Worker&) mutable {
    const v1::FunctionConfig& c = create ? request.create_function().config() : request.update_function().config();
    v1::Response r;
    r.set_id(request.id());
    auto stored = code_->store(c);
    if (!stored.ok()) {
      r = error_response(request.id(), stored.error());
    } else {
      FunctionRecord rec;
      rec.runtime = c.runtime();
      // exec: the entry is the executable (a single file's own name); python
      // and node: the function to call.
      rec.entry = c.runtime() == v1::EXEC && c.code_format() == v1::SINGLE_FILE ? c.code_file_name() : c.entry();
      rec.memory_bytes = c.memory_bytes() ? c.memory_bytes() : settings_.default_memory_bytes;
      rec.timeout_ms = c.timeout_ms() ? c.timeout_ms() : settings_.default_timeout_ms;
      rec.concurrency = c.concurrency() ? c.concurrency() : settings_.default_concurrency;
      rec.env.insert(c.env().begin(), c.env().end());
      rec.code_sha256 = stored->sha256;
      rec.code_size = stored->size;
      if (!c.parameters_json().empty()) rec.parameters_json = json_on_one_line(c.parameters_json());
      if (!c.annotations_json().empty()) rec.annotations_json = json_on_one_line(c.annotations_json());
      auto fn = create ? registry_->create_function(name, rec) : registry_->update_function(name, rec);
      if (fn.ok() && images_) images_->drop_function(name);  // of the old code, before the reply
      if (fn.ok()) {
        spdlog::info("function {}: {} version {} (code {})", name, create ? "created" : "updated", fn->version(),
                     rec.code_sha256.substr(0, 12));
        *r.mutable_function() = std::move(fn.value());
      } else {
        r = error_response(request.id(), fn.error());
      }
    }
    const bool checkpoint = create ? request.create_function().checkpoint() : request.update_function().checkpoint();
    std::optional<InstanceSpec> image_spec;
    if (checkpoint && r.has_function() && r.function().runtime() == v1::PYTHON) {
      if (auto s = instance_spec_for(r.function()); s.ok()) image_spec = std::move(s.value());
    }
    loop_->post([this, name, changed = r.has_function(), image_spec, reply = std::move(reply), r = std::move(r)]() mutable {
      // New code: no idle instance of the old one may serve again.
      if (changed) function_changed(name);
      if (image_spec && images_) ensure_image(*image_spec, image_key(*image_spec, images_->runtime_id()));  // fn create --checkpoint: now, not after a first call
      reply(std::move(r));
    });
  });
}

Result<InstanceSpec> Agent::instance_spec_for(const v1::Function& fn) const {
  InstanceSpec spec;
  if (fn.runtime() != v1::EXEC) {
    auto code_path = language_code_path(fn.runtime(), code_->path_for(fn.code_sha256()));
    if (!code_path.ok()) return code_path.error();
    if (!path_exists(settings_.runtimes_dir + "/python/stoke_runtime.py"))
      return plain_error("start instance", "the language runtimes are not installed at " + settings_.runtimes_dir);
    spec.code_path = code_path.value();
    spec.entry = fn.entry().empty() ? "main" : fn.entry();
    spec.runtimes_dir = settings_.runtimes_dir;
  }
  spec.function = fn.name();
  spec.version = fn.version();
  spec.runtime = fn.runtime();
  spec.code_dir = code_->path_for(fn.code_sha256());
  spec.executable = exec_path(fn);
  for (const auto& [k, v] : fn.env()) spec.env.push_back(k + "=" + v);
  spec.memory_bytes = fn.memory_bytes();
  auto uid = host_uids_->uid_for(fn.name());  // allocated, never derived from the name
  if (!uid.ok()) return uid.error();
  spec.host_uid = uid.value();
  return spec;
}

void Agent::invoke(v1::Request request, Server::Reply reply) {
  const uint64_t id = request.id();
  const v1::Invoke& inv = request.invoke();
  switch (inv.start()) {
    case v1::START_KIND_UNSPECIFIED:
    case v1::COLD:
      break;
    case v1::ZYGOTE:
      if (!settings_.zygotes)
        return reply(error_response(id, v1::Error::FAILED_PRECONDITION, "zygotes are disabled in this agent's configuration"));
      break;
    case v1::PREWARM:
      break;
    case v1::RESTORE:
      if (!settings_.checkpoints)
        return reply(error_response(id, v1::Error::FAILED_PRECONDITION,
                                    "checkpoint/restore is disabled in this agent's configuration"));
      break;
    case v1::WARM:
      if (!idle_.has(inv.function()))
        return reply(error_response(id, v1::Error::FAILED_PRECONDITION,
                                    "no warm instance of " + inv.function() + " is idle (invoke it once first)"));
      break;
    default:
      return reply(error_response(id, v1::Error::FAILED_PRECONDITION,
                                  "start path " + v1::StartKind_Name(inv.start()) +
                                      " is not available in this agent version (cold and warm are)"));
  }
  if (inv.params_json().size() > settings_.max_payload_bytes)
    return reply(error_response(id, v1::Error::RESOURCE_EXHAUSTED,
                                "the payload is " + std::to_string(inv.params_json().size()) + " bytes; the limit is " +
                                    std::to_string(settings_.max_payload_bytes)));
  // The client's text is checked (one object, bounded nesting) but never
  // built into a value: it is forwarded as is, so no copy or dump of it can
  // recurse as deep as the client chose.
  std::string params = "{}";
  if (!inv.params_json().empty()) {
    if (Status valid = validate_json_object_bounded(inv.params_json()); !valid.ok())
      return reply(error_response(id, v1::Error::INVALID_ARGUMENT, "the payload is refused: " + valid.error().message()));
    params = json_on_one_line(inv.params_json());
  }
  auto run = std::make_shared<Running>();
  run->request_id = id;
  run->force_cold = inv.start() == v1::COLD;
  run->force_zygote = inv.start() == v1::ZYGOTE;
  run->force_restore = inv.start() == v1::RESTORE;
  run->force_prewarm = inv.start() == v1::PREWARM;
  run->accepted = std::chrono::steady_clock::now();
  if (inv.async()) run->async_reply = std::move(reply);
  else run->reply = std::move(reply);
  run->async = inv.async();
  // The function's current version: from the loop's cache, or read by a
  // worker (and cached unless the function changed meanwhile).
  const std::string& name = inv.function();
  if (auto cached = functions_.find(name); cached != functions_.end())
    return accept(run, name, cached->second.function, std::move(params));
  const uint64_t generation = generation_[name];
  workers_->submit([this, run, name, generation, params = std::move(params)](Worker&) mutable {
    auto fn = std::make_shared<Result<v1::Function>>(registry_->get_function(name));
    loop_->post([this, run, name, generation, params = std::move(params), fn]() mutable {
      if (!fn->ok()) return answer(run, error_response(run->request_id, fn->error()));
      if (generation_[name] == generation) {
        if (functions_.size() >= kCachedFunctions) functions_.clear();
        functions_[name] = CachedFunction{fn->value(), nullptr, ""};
      }
      accept(run, name, fn->value(), std::move(params));
    });
  });
}

Status Agent::fill_spec(Running& run, const v1::Function& fn) {
  auto cached = functions_.find(fn.name());
  const bool cacheable = cached != functions_.end() && cached->second.function.version() == fn.version();
  if (cacheable && cached->second.spec) {
    run.spec = *cached->second.spec;
    run.image_key = cached->second.image_key;
    return {};
  }
  auto spec = instance_spec_for(fn);
  if (!spec.ok()) return spec.error();
  run.spec = std::move(spec.value());
  run.image_key = images_ ? image_key(run.spec, images_->runtime_id()) : "";
  if (cacheable) {
    cached->second.spec = std::make_shared<const InstanceSpec>(run.spec);
    cached->second.image_key = run.image_key;
  }
  return {};
}

void Agent::answer(const std::shared_ptr<Running>& run, v1::Response r) {
  Server::Reply to = run->async ? std::move(run->async_reply) : std::move(run->reply);
  if (to) to(std::move(r));
}

void Agent::accept(const std::shared_ptr<Running>& run, const std::string& name, const v1::Function& function,
                   std::string params) {
  const uint64_t id = run->request_id;
  const v1::Function* fn = &function;
  if (run->force_zygote && fn->runtime() != v1::PYTHON)
    return answer(run, error_response(id, v1::Error::FAILED_PRECONDITION,
                                 "zygotes are for Python functions only (Node.js is multithreaded and cannot fork "
                                 "safely; it has prewarm, warm and cold starts)"));
  if (run->force_prewarm && fn->runtime() == v1::EXEC)
    return answer(run, error_response(id, v1::Error::FAILED_PRECONDITION,
                                 "exec functions have no prewarmed instances (their process is their code)"));
  if (run->force_restore && fn->runtime() != v1::PYTHON)
    return answer(run, error_response(id, v1::Error::FAILED_PRECONDITION,
                                 "checkpoint/restore is for Python functions only (it needs a single-threaded "
                                 "runtime; Node.js has prewarm, warm and cold starts)"));
  if (Status s = fill_spec(*run, *fn); !s.ok())
    return answer(run, error_response(id, v1::Error::FAILED_PRECONDITION, s.error().message()));
  // Bound parameters first, the invocation's own over them. Parsed only for
  // a function that has some: the warm path of one that has none is untouched.
  if (!fn->parameters_json().empty() && fn->parameters_json() != "{}") params = with_defaults(fn->parameters_json(), params);
  v1::Activation& rec = run->record;
  rec.set_activation_id(new_activation_id());
  rec.set_function(name);
  rec.set_version(fn->version());
  rec.set_start_ms(now_ms());
  rec.set_start_kind(v1::COLD);
  run->concurrency = std::max<uint32_t>(fn->concurrency(), 1);
  run->limits.timeout = std::chrono::milliseconds(fn->timeout_ms());
  run->limits.max_result_bytes = settings_.max_result_bytes;
  run->limits.max_log_bytes = settings_.max_log_bytes;
  run->limits.max_log_lines = settings_.max_log_lines;
  // {"value": <params>, ...the rest}: the rest is the agent's own, flat.
  // Built by hand, not through a JSON value per call: the params are
  // forwarded as they came (checked above) and the rest are strings of a
  // known alphabet (a checked name, hex, digits), escaped all the same.
  std::string& line = run->request_line;
  line.reserve(params.size() + name.size() + 200);
  line = "{\"value\":";
  line += params;
  line += ",\"namespace\":\"_\",\"action_name\":";
  append_json_string(line, name);
  line += ",\"action_version\":\"";
  line += std::to_string(fn->version());
  line += "\",\"activation_id\":\"";
  line += rec.activation_id();
  line += "\",\"transaction_id\":\"";
  line += rec.activation_id();
  line += "\",\"deadline\":\"";
  line += std::to_string(now_ms() + static_cast<int64_t>(fn->timeout_ms()));
  line += "\"}\n";
  // In the running journal before it starts (or its id is given out): after
  // a crash, the agent's restart finds it and records it failed. Its
  // registry row follows through the group-commit writer, which folds it
  // into the finish when the activation is short (kBeginHold).
  auto slot = journal_->begin(JournalEntry{rec.activation_id(), rec.function(), rec.version(), rec.start_ms()});
  if (!slot.ok()) return answer(run, error_response(run->request_id, slot.error()));
  run->journal_slot = *slot;
  records_->write(Registry::ActivationWrite::kBegin, rec, [id = rec.activation_id()](Status s) {
    if (!s.ok()) spdlog::error("activation {}: recording its start failed: {}", id, s.error().message());
  });
  spdlog::debug("function {} activation {}: accepted", rec.function(), rec.activation_id());
  if (run->async) {
    v1::Response r;
    r.set_id(run->request_id);
    r.mutable_invoke_accepted()->set_activation_id(rec.activation_id());
    answer(run, std::move(r));
  }
  running_[rec.activation_id()] = run;
  run->generation = generation_[run->spec.function];
  admit(run);
}

void Agent::admit(const std::shared_ptr<Running>& run) {
  if (stopping_) {
    finish(run, ActivationOutcome{v1::INTERNAL_ERROR, error_json("the agent is stopping"), {}, false, false});
    return;
  }
  run->queued = std::chrono::steady_clock::now();
  using Admit = FunctionSlots<std::shared_ptr<Running>>::Admit;
  switch (slots_.admit(run->spec.function, run, run->concurrency, settings_.max_queue_per_function)) {
    case Admit::kRun:
      run->holds_slot = true;
      run->admitted = std::chrono::steady_clock::now();
      start_instance(run);
      return;
    case Admit::kQueued:
      return;  // release_slot lets it in
    case Admit::kRefused:
      finish(run, ActivationOutcome{v1::INTERNAL_ERROR,
                                    error_json("too many activations are waiting for this function"), {}, false,
                                    false});
      return;
  }
}

void Agent::release_slot(const std::string& function) {
  for (auto& next : slots_.release(function)) {
    next->holds_slot = true;
    next->admitted = std::chrono::steady_clock::now();
    start_instance(next);
  }
}

StartFacts Agent::start_facts(const Running& run) {
  StartFacts f;
  f.forced = run.force_cold      ? v1::COLD
             : run.force_zygote  ? v1::ZYGOTE
             : run.force_restore ? v1::RESTORE
             : run.force_prewarm ? v1::PREWARM
                                 : v1::START_KIND_UNSPECIFIED;
  f.runtime = run.spec.runtime;
  f.zygote_ready = zygote_ready_for(run);
  f.image_ready = image_ready_for(run);
  return f;
}

void Agent::start_instance(const std::shared_ptr<Running>& run) {
  for (StartPath path : pooled_paths(start_facts(*run))) {
    if (path == StartPath::kWarm && take_idle(run)) {
      // Warm: no worker, no spawn; the conversation starts right here.
      run->record.set_wait_ms(ms_between(run->queued, std::chrono::steady_clock::now()));
      run->record.set_start_kind(v1::WARM);
      run->record.set_init_ms(0);
      converse(run);
      return;
    }
    if (path == StartPath::kPrewarmed && take_prewarmed(run)) return;
  }
  start_cold(run);  // memory for a new instance, then spawn_instance
}

void Agent::converse(const std::shared_ptr<Running>& run, bool first_line_is_ready) {
  if (run->cancelled || stopping_) {
    finish(run, ActivationOutcome{v1::INTERNAL_ERROR, error_json("the agent is stopping"), {}, false, false});
    return;
  }
  run->conversing = std::chrono::steady_clock::now();
  run->conversation = ActivationRun::start(
      *loop_, *run->instance, run->request_line, run->limits,
      [this, run](ActivationOutcome o) { finish(run, std::move(o)); }, first_line_is_ready);
}

void Agent::rerun_cold(const std::shared_ptr<Running>& run) {
  run->retried_cold = true;
  run->conversation.reset();
  retire(std::move(run->instance), MemoryHolder::kActivation, 0);  // the run keeps its reservation
  run->force_zygote = run->force_restore = false;
  run->record.set_start_kind(v1::COLD);
}

void Agent::spawn_instance(const std::shared_ptr<Running>& run) {
  switch (new_instance_path(start_facts(*run))) {
    case StartPath::kWaitForZygote: return wait_for_zygote(run);
    case StartPath::kWaitForImage: return wait_for_image(run);
    case StartPath::kZygoteFork: return fork_from_zygote(run);
    case StartPath::kRestore: return restore_instance(run);
    default: return spawn_cold(run);
  }
}

void Agent::spawn_cold(const std::shared_ptr<Running>& run) {
  // Waiting: queued behind the function's concurrency limit and for memory.
  run->record.set_wait_ms(ms_between(run->queued, std::chrono::steady_clock::now()));
  workers_->submit([this, run](Worker& worker) {
    // std::function needs copyable captures; the instance travels in a shared_ptr.
    auto instance = std::make_shared<Result<std::unique_ptr<Instance>>>(Instance::start(*worker.spawner, run->spec));
    loop_->post([this, run, instance]() mutable {
      if (!instance->ok()) {
        const Error& e = instance->error();
        if (run->reserved) {
          run->reserved = false;
          release(MemoryHolder::kActivation, run->spec.memory_bytes);
        }
        // A missing or non-executable entry is the function's fault, not ours.
        bool developer = e.cause == ErrorCause::kExec;
        spdlog::warn("function {} activation {}: instance did not start: {}", run->spec.function,
                     run->record.activation_id(), e.message());
        finish(run, ActivationOutcome{developer ? v1::DEVELOPER_ERROR : v1::INTERNAL_ERROR,
                                      error_json("the instance did not start: " + e.message()), {}, false, false});
        return;
      }
      run->instance = std::move(instance->value());
      run->record.set_init_ms(run->instance->init_ms());
      converse(run);
    });
  });
}

void Agent::finish(const std::shared_ptr<Running>& run, ActivationOutcome outcome) {
  if (run->finishing) return;
  // A restore the restorer refused (or that died before its runtime was
  // ready): nothing of the activation ran, so it starts cold instead.
  if (outcome.never_started && run->record.start_kind() == v1::RESTORE && !run->retried_cold && !run->cancelled &&
      !stopping_) {
    std::string why = outcome.result_json;
    for (const auto& line : outcome.logs) why += " " + line;  // the restorer's one line on fd 2
    rerun_cold(run);
    restore_failed(run, why);
    return;
  }
  // An instance forked from a zygote dies with it (its pid namespace is
  // inside the zygote's). If that is why it ended, the activation is not at
  // fault: it runs again, once, from a cold start.
  if (!outcome.replied && outcome.status == v1::DEVELOPER_ERROR && run->instance && run->instance->origin() &&
      !run->retried_cold && !run->origin_checked && !run->cancelled && !stopping_) {
    // The zygote's own exit is signalled after its pid namespace is emptied,
    // so give it a moment to show (only runs that died without a reply wait).
    run->origin_checked = true;
    auto origin = run->instance->origin();
    workers_->submit([this, run, origin, outcome = std::move(outcome)](Worker&) mutable {
      bool gone = origin->wait_gone(std::chrono::milliseconds(200));
      loop_->post([this, run, gone, origin, outcome = std::move(outcome)]() mutable {
        if (!gone || run->cancelled || stopping_) return finish(run, std::move(outcome));
        spdlog::warn("function {} activation {}: its zygote died under it; running it again from a cold start",
                     run->spec.function, run->record.activation_id());
        rerun_cold(run);
        auto* z = zygotes_.find(run->spec.function);
        if (z != nullptr && z->zygote == origin) zygote_died(run->spec.function);
        spawn_cold(run);
      });
    });
    return;
  }
  run->finishing = true;
  run->outcome_at = std::chrono::steady_clock::now();
  // A restore's init lasts until its runtime said it was ready.
  if (run->record.start_kind() == v1::RESTORE && outcome.ready_at.time_since_epoch().count() != 0)
    run->record.set_init_ms(ms_between(run->restore_requested, outcome.ready_at));
  run->conversation.reset();
  // Reused: an instance of a language runtime (its logs end with a marker, so
  // the next activation's are its own) that answered normally, of a function
  // that has not changed since.
  run->reuse = run->instance && run->spec.runtime != v1::EXEC && settings_.keep_alive.count() > 0 && !stopping_ &&
               !run->cancelled && (outcome.status == v1::SUCCESS || outcome.status == v1::APPLICATION_ERROR) &&
               !outcome.logs_truncated &&  // unread output left in its pipe would be the next activation's logs
               generation_[run->spec.function] == run->generation;
  // Tearing down (kill, reap, read usage, remove the cgroup) blocks: a worker
  // does it. An instance kept for the next call only has its counters read
  // (cgroupfs, in memory: it never waits on a disk), so the loop does that
  // itself and saves two thread hand-offs on the warm path. The record is
  // written by the group-commit thread either way.
  // Other activations in flight will finish soon: the writer may gather
  // their records into one commit (read here: `complete` may run on a worker).
  const bool more_coming = running_.size() > 1;
  auto complete = [this, run, more_coming, outcome = std::move(outcome)](bool on_loop) mutable {
    v1::Activation& rec = run->record;
    if (run->instance && run->reuse) {
      // The instance lives on: this activation's share of its cgroup's counters.
      Instance& inst = *run->instance;
      auto now = inst.sandbox().cgroup().usage();
      if (now.ok() && now->oom_kills == inst.usage_so_far.oom_kills) {
        v1::Usage* u = rec.mutable_usage();
        CpuSplit cpu = cpu_time_between(inst.usage_so_far, now.value());
        u->set_cpu_user_ms(static_cast<double>(cpu.user_ns) / 1e6);
        u->set_cpu_system_ms(static_cast<double>(cpu.system_ns) / 1e6);
        u->set_memory_peak_bytes(now->memory_peak_bytes);
        u->set_pids_peak(now->pids_peak);
        inst.usage_so_far = now.value();
        (void)inst.sandbox().cgroup().reset_peak();
      } else {
        run->reuse = false;  // something was OOM-killed in there: not reusable
      }
    }
    if (run->instance && !run->reuse) {
      Sandbox& sb = run->instance->sandbox();
      (void)sb.kill();
      // Bounded: a sandbox that does not die is cgroup-killed and given up on.
      auto st = sb.wait(std::chrono::steady_clock::now() + std::chrono::seconds(5));
      if (st.ok()) {
        v1::Usage* u = rec.mutable_usage();
        u->set_cpu_user_ms(static_cast<double>(st->usage.cpu_user_ns) / 1e6);
        u->set_cpu_system_ms(static_cast<double>(st->usage.cpu_system_ns) / 1e6);
        u->set_memory_peak_bytes(st->usage.memory_peak_bytes);
        u->set_pids_peak(st->usage.pids_peak);
        if (st->oom && outcome.status != v1::SUCCESS && outcome.status != v1::APPLICATION_ERROR) {
          outcome.status = v1::OOM;
          outcome.result_json = error_json("the function ran out of memory (limit " +
                                           std::to_string(run->spec.memory_bytes >> 20) + " MiB)");
        }
      } else {
        spdlog::warn("activation {}: teardown: {}", rec.activation_id(), st.error().message());
      }
      run->instance.reset();
    }
    if (run->instance && run->reuse && run->reserved) {
      // The instance is free for the next call now, not once the record is
      // committed: it (and the function's slot) does not depend on the record,
      // only the reply does. A queued call of the function starts on it at once.
      run->reserved = false;
      park(run->spec.function, run->spec.version, run->spec.memory_bytes, run->concurrency,
           std::move(run->instance));  // its memory is the idle instance's now
      if (run->holds_slot) {
        run->holds_slot = false;
        release_slot(run->spec.function);
      }
      // An idle instance can make way (evicted) for an activation waiting for memory.
      serve_memory_waiting();
    }
    rec.set_end_ms(now_ms());
    double duration = ms_since(run->accepted);
    rec.set_duration_ms(duration);
    rec.set_status(outcome.status);
    rec.set_result_json(outcome.result_json);
    for (auto& line : run->init_logs) rec.add_logs(std::move(line));
    for (auto& line : outcome.logs) rec.add_logs(std::move(line));
    rec.set_logs_truncated(outcome.logs_truncated);
    // Billed: the time an instance served this activation, from getting its
    // slot (instance start included) to the result; not the queue, not teardown.
    double billed = run->admitted.time_since_epoch().count() == 0
                        ? 0.0
                        : std::chrono::duration<double, std::milli>(run->outcome_at - run->admitted).count();
    fill_billing(*rec.mutable_usage(), billed, settings_.billing_unit_ms, run->spec.memory_bytes);
    spdlog::info("function {} activation {}: {} in {:.1f} ms (wait {:.1f}, init {:.1f})", rec.function(),
                 rec.activation_id(), v1::ActivationStatus_Name(rec.status()), rec.duration_ms(), rec.wait_ms(),
                 rec.init_ms());
    // The reply goes out once the record is stored: appended to the
    // activation log, on the loop; its registry row follows (group commit).
    auto record_and_reply = [this, run, more_coming] {
      const v1::Activation& record = run->record;
      Status saved = activation_log_->append(record);
      if (saved.ok()) {
        logged_[record.activation_id()] = record;
        index_logged(record, more_coming);
      } else {
        spdlog::error("activation {}: recording the result failed: {}", record.activation_id(),
                      saved.error().message());
        // Its row, if the registry can still take one (the caller gets the error either way).
        records_->write(Registry::ActivationWrite::kFinish, record, nullptr, more_coming);
      }
      running_.erase(run->record.activation_id());
      // Its journal entry goes only with a stored record: one that could not
      // be stored (a full disk) stays there, so the next start records the
      // activation as failed instead of losing it.
      if (run->journal_slot && saved.ok()) journal_->end(*std::exchange(run->journal_slot, std::nullopt));
      if (run->reserved) {
        run->reserved = false;
        // An instance not kept went in the worker's teardown above.
        release(MemoryHolder::kActivation, run->spec.memory_bytes);
      }
      // Activations refused at admission (queue full, stopping) never held one.
      if (run->holds_slot) release_slot(run->spec.function);
      if (run->reply && !run->refused.empty()) {
        // Admission said no: the caller gets the error itself (the activation
        // is recorded too, as internal_error, so nothing is lost).
        Server::Reply reply = std::move(run->reply);
        reply(error_response(run->request_id, v1::Error::RESOURCE_EXHAUSTED, "resource exhausted: " + run->refused));
      } else if (run->reply && !saved.ok()) {
        // Never a reply with an activation that is not recorded.
        Server::Reply reply = std::move(run->reply);
        reply(error_response(run->request_id, saved.error().context("activation " + run->record.activation_id() +
                                                                      " ran; recording it")));
      } else if (run->reply) {
        v1::Response r;
        r.set_id(run->request_id);
        *r.mutable_activation() = run->record;
        Server::Reply reply = std::move(run->reply);
        reply(std::move(r));
        if (run->record.start_kind() == v1::WARM && run->record.status() == v1::SUCCESS) {
          // The agent's own time: all of it but the runtime's turn and the
          // wait for a free instance (the function's concurrency).
          auto now = std::chrono::steady_clock::now();
          warm_agent_time_.add(std::chrono::duration<double, std::micro>((now - run->accepted) -
                                                                         (run->admitted - run->queued) -
                                                                         (run->outcome_at - run->conversing))
                                   .count());
        }
      }
      if (stopping_ && running_.empty()) loop_->stop();
      refill_prewarm();
      // A Python function that answered gets a zygote for its next cold starts.
      if (run->record.status() == v1::SUCCESS || run->record.status() == v1::APPLICATION_ERROR)
        if (run->generation == generation_[run->spec.function]) {
          ensure_zygote(run->spec);
          fork_ahead(run->spec.function);  // after the activation: it had the CPU first
          ensure_image(run->spec, run->image_key);
        }
    };
    if (on_loop) record_and_reply();
    else loop_->post(std::move(record_and_reply));
  };
  if (run->instance && run->reuse) complete(true);
  else workers_->submit([complete = std::move(complete)](Worker&) mutable { complete(false); });
}

void Agent::index_logged(const v1::Activation& record, bool more_coming) {
  records_->write(Registry::ActivationWrite::kFinish, record, [this, id = record.activation_id()](Status indexed) {
    if (indexed.ok()) {
      if (logged_.erase(id) > 0) clear_activation_log_when_indexed();
      return;
    }
    // The log has it (and the next start would index it); until then reads
    // are served from memory, and the row is tried again.
    spdlog::warn("activation {}: writing its registry row failed, again in 1 s: {}", id, indexed.error().message());
    loop_->timer(std::chrono::seconds(1), [this, id](int res) {
      if (res == -ECANCELED || stopping_) return;
      if (auto it = logged_.find(id); it != logged_.end()) index_logged(it->second, false);
    });
  }, more_coming);
}

void Agent::clear_activation_log_when_indexed() {
  // Emptied when every record in it is in the registry, once it is worth a
  // truncate (the loop is its only writer: no append can race this).
  if (!logged_.empty() || activation_log_->size_bytes() < kActivationLogClearBytes) return;
  if (Status s = activation_log_->clear(); !s.ok())
    spdlog::warn("emptying the activation log failed (it keeps growing until the next start): {}", s.error().message());
}

void Agent::status(uint64_t id, Server::Reply reply) {
  v1::Response r;
  r.set_id(id);
  v1::Status* st = r.mutable_status();
  st->set_agent_version(wire::kAgentVersion);
  st->set_protocol_version(wire::kProtocolVersion);
  struct utsname u;
  if (uname(&u) == 0) st->set_kernel(u.release);
  for (const auto& [name, available] : features_) (*st->mutable_features())[name] = available;
  uint32_t live = 0, idle = 0;
  for (const auto& [aid, run] : running_) live += run->instance ? 1 : 0;
  idle = static_cast<uint32_t>(idle_.size());
  live += static_cast<uint32_t>(prewarmed_.size());
  st->set_activations_running(static_cast<uint32_t>(running_.size()));
  st->set_live_sandboxes(live + idle);
  st->set_started_ms(static_cast<int64_t>(started_ms_));
  v1::LatencySummary* warm = st->mutable_warm_agent_time();
  warm->set_samples(warm_agent_time_.size());
  warm->set_total(warm_agent_time_.total());
  warm->set_p50_us(warm_agent_time_.percentile(50));
  warm->set_p99_us(warm_agent_time_.percentile(99));
  (*st->mutable_pools())["netns"] = static_cast<uint32_t>(netns_->free_count());
  (*st->mutable_pools())["warm_idle"] = idle;
  (*st->mutable_pools())["prewarm_python"] = static_cast<uint32_t>(prewarmed_.ready(v1::PYTHON));
  (*st->mutable_pools())["prewarm_node"] = static_cast<uint32_t>(prewarmed_.ready(v1::NODE));
  (*st->mutable_pools())["checkpoint_images"] = images_ ? static_cast<uint32_t>(images_->size()) : 0;
  st->set_reserved_memory_bytes(memory_.reserved());
  for (size_t i = 0; i < kMemoryHolders; ++i) {
    auto holder = static_cast<MemoryHolder>(i);
    (*st->mutable_reserved_memory_by_holder())[memory_holder_name(holder)] = memory_.held(holder);
  }
  st->set_memory_accounting_errors(memory_.errors());
  st->set_memory_budget_bytes(settings_.memory_budget_bytes);
  double idle_gb_s = idle_gb_seconds_;
  idle_.for_each([&](const std::string&, const IdlePool::Entry& i) {
    idle_gb_s += ms_since(i.parked) / 1000.0 * static_cast<double>(i.memory_bytes) / double(1ULL << 30);
  });
  prewarmed_.for_each([&](v1::Runtime, const PrewarmPool::Entry& p) {
    idle_gb_s += ms_since(p.since) / 1000.0 * static_cast<double>(p.memory_bytes) / double(1ULL << 30);
  });
  st->set_idle_gb_seconds(idle_gb_s);
  fill_zygote_status(*st);
  workers_->submit([this, r = std::move(r), reply = std::move(reply)](Worker& worker) mutable {
    v1::Status* s = r.mutable_status();
    s->set_cgroup_version(std::string(worker.spawner->cgroups().version()));
    for (const auto& c : worker.spawner->cgroups().controllers()) s->add_cgroup_controllers(c);
    for (const auto& p : worker.spawner->cgroups().parent_dirs()) s->add_cgroup_parents(p);
    auto fns = registry_->list_functions();
    if (fns.ok()) s->set_functions(static_cast<uint32_t>(fns->functions_size()));
    auto total = registry_->count_activations();
    if (total.ok()) s->set_activations_total(total.value());
    loop_->post([reply = std::move(reply), r = std::move(r)]() mutable { reply(std::move(r)); });
  });
}

void Agent::begin_stop() {
  if (stopping_) return;
  stopping_ = true;
  if (on_stopping_) on_stopping_();
  server_->close_listener();
  retire_idle_entries(idle_.take_all());
  if (keep_alive_timer_ != 0) loop_->cancel_timer(keep_alive_timer_);
  for (auto& p : prewarmed_.take_all()) retire(std::move(p.instance), MemoryHolder::kPrewarmed, p.memory_bytes);
  retire_zygote("");
  // Queued activations never start; running ones are cancelled; each is
  // recorded with its status before the loop ends.
  std::vector<std::shared_ptr<Running>> all;
  for (auto& [aid, run] : running_) all.push_back(run);
  for (auto& run : all) {
    run->cancelled = true;
    if (run->conversation) run->conversation->cancel(v1::INTERNAL_ERROR, "the agent is stopping");
  }
  for (auto& run : memory_waiting_) {
    loop_->cancel_timer(run->memory_timer);
    finish(run, ActivationOutcome{v1::INTERNAL_ERROR, error_json("the agent is stopping"), {}, false, false});
  }
  memory_waiting_.clear();
  for (auto& run : slots_.take_all_waiting())
    finish(run, ActivationOutcome{v1::INTERNAL_ERROR, error_json("the agent is stopping"), {}, false, false});
  if (running_.empty()) {
    loop_->stop();
    return;
  }
  loop_->timer(settings_.stop_grace, [this](int) {
    spdlog::warn("stop: {} activation(s) still finishing after the grace period; stopping anyway", running_.size());
    loop_->stop();
  });
}

}  // namespace stoke::agent
