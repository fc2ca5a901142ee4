// The agent's namespace calls (operators only; the scope check in handle()
// refused everyone else): create, list, delete, and a new key. The registry
// writes run on a worker; the loop's key table changes before the reply, so
// a key is usable as soon as its maker has it, and a replaced one is refused
// from then on.
#include <spdlog/spdlog.h>

#include "agent/agent_internal.h"
#include "agent/names.h"
#include "api/wire/responses.h"

namespace stoke::agent {

namespace {

v1::Response registry_error(uint64_t id, const Error& e) {
  return wire::error_response(id, error_code(error_kind(e)), e.message());
}

}  // namespace

void Agent::namespace_request(v1::Request request, Server::Reply reply, std::optional<std::string> only) {
  workers_->submit([this, request = std::move(request), reply = std::move(reply), only = std::move(only)](Worker&) mutable {
    const uint64_t id = request.id();
    v1::Response r;
    r.set_id(id);
    // What the loop's key table must learn before the reply goes out.
    std::optional<std::pair<std::string, NamespaceKeys::Entry>> set_key;
    std::optional<std::string> erase_key;
    auto fresh_key = [&](const std::string& name) -> Result<NamespaceKey> {
      auto key = new_namespace_key();
      if (!key.ok()) return key.error().context("make a key for namespace '" + name + "'");
      return key;
    };
    // The reply that shows a new key (its only showing) and the table's update.
    auto issued = [&](const Registry::NamespaceRow& row, const NamespaceKey& key) {
      v1::Namespace* ns = r.mutable_namespace_();
      ns->set_name(row.name);
      ns->set_key_uuid(row.key_uuid);
      ns->set_key(key.text());
      ns->set_created_ms(row.created_ms);
      set_key.emplace(row.name, NamespaceKeys::Entry{row.key_uuid, row.key_sha256});
    };
    switch (request.body_case()) {
      case v1::Request::kCreateNamespace: {
        const std::string& name = request.create_namespace().name();
        if (name == kDefaultNamespace) {
          r = wire::error_response(id, v1::Error::ALREADY_EXISTS,
                                   "the default namespace 'guest' always exists; `stoke ns key guest` makes its key");
          break;
        }
        auto key = fresh_key(name);
        if (!key.ok()) {
          r = registry_error(id, key.error());
          break;
        }
        Registry::NamespaceRow row{name, key->uuid, key_secret_sha256(key->secret), detail::now_ms()};
        if (Status s = registry_->create_namespace(row); !s.ok()) {
          r = registry_error(id, s.error());
          break;
        }
        issued(row, *key);
        spdlog::info("namespace {}: created", name);
        break;
      }
      case v1::Request::kRotateNamespaceKey: {
        const std::string& name = request.rotate_namespace_key().name();
        auto key = fresh_key(name);
        if (!key.ok()) {
          r = registry_error(id, key.error());
          break;
        }
        Registry::NamespaceRow row{name, key->uuid, key_secret_sha256(key->secret), detail::now_ms()};
        Status s = registry_->set_namespace_key(name, row.key_uuid, row.key_sha256);
        // The default namespace has no row until its first key.
        if (!s.ok() && name == kDefaultNamespace && error_kind(s.error()) == ErrorKind::kNotFound)
          s = registry_->create_namespace(row);
        if (!s.ok()) {
          r = registry_error(id, s.error());
          break;
        }
        issued(row, *key);
        spdlog::info("namespace {}: new key {}", name, row.key_uuid);
        break;
      }
      case v1::Request::kListNamespaces: {
        auto rows = registry_->list_namespaces();
        if (!rows.ok()) {
          r = registry_error(id, rows.error());
          break;
        }
        auto* list = r.mutable_namespace_list();
        bool default_listed = false;
        for (const auto& row : rows.value()) default_listed |= row.name == kDefaultNamespace;
        if (!default_listed && (!only || *only == kDefaultNamespace))
          list->add_namespaces()->set_name(std::string(kDefaultNamespace));
        for (const auto& row : rows.value()) {
          if (only && row.name != *only) continue;
          v1::Namespace* ns = list->add_namespaces();
          ns->set_name(row.name);
          ns->set_key_uuid(row.key_uuid);
          ns->set_created_ms(row.created_ms);
        }
        break;
      }
      case v1::Request::kDeleteNamespace: {
        const std::string& name = request.delete_namespace().name();
        if (name == kDefaultNamespace) {
          r = wire::error_response(id, v1::Error::FAILED_PRECONDITION, "the default namespace cannot be deleted");
          break;
        }
        if (Status s = registry_->delete_namespace(name); !s.ok()) {
          r = registry_error(id, s.error());
          break;
        }
        r.mutable_deleted();
        erase_key = name;
        spdlog::info("namespace {}: deleted", name);
        break;
      }
      default:
        break;
    }
    loop_->post([this, set_key = std::move(set_key), erase_key = std::move(erase_key), reply = std::move(reply),
                 r = std::move(r)]() mutable {
      if (set_key) namespace_keys_.set(set_key->first, set_key->second);
      if (erase_key) namespace_keys_.erase(*erase_key);
      reply(std::move(r));
    });
  });
}

}  // namespace stoke::agent
