// The API's edge for namespaces (docs/api.md, "Namespaces"): which namespace
// a request acts in, and the turn of its names into the qualified ones the
// agent keeps (agent/names.h) and back. Pure, unit-tested without root
// (tests/unit/namespace_scope_test.cc).
//
// Who acts where:
//   - a request with an api_key acts in that key's namespace, whoever sent
//     it; naming another namespace is PERMISSION_DENIED;
//   - a peer whose uid is in key_required_uids (the HTTP gateway) must send a
//     key (UNAUTHENTICATED otherwise);
//   - any other admitted peer is an operator: it names a namespace (which
//     must exist) or acts in the default one, and alone may manage namespaces
//     and read the node's status (which names every namespace's functions).
#pragma once

#include <string>

#include "agent/namespace_keys.h"
#include "agent/server.h"
#include "proto/stoke/v1/api.pb.h"

namespace stoke::agent {

struct RequestScope {
  std::string ns;          // the namespace it acts in
  bool operator_ = false;  // a local operator, not a key
};

// The scope, or the error response's code and message.
struct ScopeError {
  v1::Error::Code code = v1::Error::OK;
  std::string message;
};
RequestScope resolve_scope(const AccessPolicy& access, const Peer& peer, const v1::Request& request,
                           const NamespaceKeys& keys, ScopeError& error);

// Rewrites the function names the request carries into qualified names in
// `ns` (each must be a plain function name: INVALID_ARGUMENT otherwise).
bool qualify_request(v1::Request& request, const std::string& ns, ScopeError& error);

// The reply as its namespace sees it: function names without the namespace,
// the namespace in its own field.
void present_response(v1::Response& response);

// Whether a qualified function name belongs to `ns`.
bool in_namespace(const std::string& qualified, const std::string& ns);

}  // namespace stoke::agent
