#include "agent/namespace_scope.h"

#include "agent/names.h"

namespace stoke::agent {

namespace {

// Listing is not managing: a key holder's list shows its own namespace.
bool manages_namespaces(const v1::Request& r) {
  return r.has_create_namespace() || r.has_delete_namespace() || r.has_rotate_namespace_key();
}

bool qualify(std::string* name, const std::string& ns, ScopeError& error) {
  if (Status s = check_function_name(*name); !s.ok()) {
    error = {v1::Error::INVALID_ARGUMENT, s.error().message()};
    return false;
  }
  *name = qualified_name(ns, *name);
  return true;
}

void present(v1::Function& f) {
  f.set_namespace_(std::string(namespace_of(f.name())));
  f.set_name(std::string(local_name(f.name())));
}

void present(v1::Activation& a) {
  a.set_namespace_(std::string(namespace_of(a.function())));
  a.set_function(std::string(local_name(a.function())));
}

}  // namespace

RequestScope resolve_scope(const AccessPolicy& access, const Peer& peer, const v1::Request& request,
                           const NamespaceKeys& keys, ScopeError& error) {
  const std::string& named = request.namespace_();
  if (!request.api_key().empty()) {
    auto ns = keys.authenticate(request.api_key());
    if (!ns) {
      error = {v1::Error::UNAUTHENTICATED, "the namespace key is not valid"};
      return {};
    }
    if (!named.empty() && named != "_" && named != *ns) {
      error = {v1::Error::PERMISSION_DENIED, "this key belongs to another namespace than '" + named + "'"};
      return {};
    }
    if (manages_namespaces(request)) {
      error = {v1::Error::PERMISSION_DENIED, "namespaces are managed by the node's operators, not with a key"};
      return {};
    }
    // The node's status names every namespace's functions (zygotes, pools).
    if (request.has_get_status()) {
      error = {v1::Error::PERMISSION_DENIED, "the node's status is for its operators, not for a key"};
      return {};
    }
    return {*ns, false};
  }
  if (access.requires_key(peer)) {
    error = {v1::Error::UNAUTHENTICATED, "uid " + std::to_string(peer.uid) + " must send a namespace key"};
    return {};
  }
  if (named.empty() || named == "_" || named == kDefaultNamespace) return {std::string(kDefaultNamespace), true};
  if (Status s = check_namespace_name(named); !s.ok()) {
    error = {v1::Error::INVALID_ARGUMENT, s.error().message()};
    return {};
  }
  if (!keys.exists(named)) {
    error = {v1::Error::NOT_FOUND, "namespace '" + named + "' does not exist"};
    return {};
  }
  return {named, true};
}

bool qualify_request(v1::Request& r, const std::string& ns, ScopeError& error) {
  switch (r.body_case()) {
    case v1::Request::kCreateFunction: return qualify(r.mutable_create_function()->mutable_name(), ns, error);
    case v1::Request::kUpdateFunction: return qualify(r.mutable_update_function()->mutable_name(), ns, error);
    case v1::Request::kGetFunction: return qualify(r.mutable_get_function()->mutable_name(), ns, error);
    case v1::Request::kDeleteFunction: return qualify(r.mutable_delete_function()->mutable_name(), ns, error);
    case v1::Request::kInvoke: return qualify(r.mutable_invoke()->mutable_function(), ns, error);
    case v1::Request::kListActivations:
      return r.list_activations().function().empty() ||
             qualify(r.mutable_list_activations()->mutable_function(), ns, error);
    default: return true;
  }
}

void present_response(v1::Response& r) {
  switch (r.body_case()) {
    case v1::Response::kFunction: present(*r.mutable_function()); break;
    case v1::Response::kFunctionList:
      for (auto& f : *r.mutable_function_list()->mutable_functions()) present(f);
      break;
    case v1::Response::kActivation: present(*r.mutable_activation()); break;
    case v1::Response::kActivationList:
      for (auto& a : *r.mutable_activation_list()->mutable_activations()) present(a);
      break;
    default: break;
  }
}

bool in_namespace(const std::string& qualified, const std::string& ns) { return namespace_of(qualified) == ns; }

}  // namespace stoke::agent
