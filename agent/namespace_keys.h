// Namespace keys: how a client that is not a local operator (the HTTP
// gateway, on behalf of its users) proves which namespace it acts in.
//
// A key is OpenWhisk's "uuid:secret" pair: a random version-4 uuid that names
// it and a 64-character random secret. The agent keeps the uuid and the
// secret's SHA-256, never the secret: it is shown once, when made. The secret
// is 64 characters from a 62-letter alphabet (~381 bits), so a plain hash is
// enough (nothing to slow a guesser down for), and the comparison takes the
// same time wherever the first difference lies.
//
// NamespaceKeys is the agent's in-memory table of them (loaded from the
// registry at start, changed with it), asked on the loop thread for every
// request that carries a key.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "sandbox/base/result.h"

namespace stoke::agent {

struct NamespaceKey {
  std::string uuid;
  std::string secret;
  std::string text() const { return uuid + ":" + secret; }
};

// A fresh key from the kernel's random source.
Result<NamespaceKey> new_namespace_key();
// "uuid:secret" as a client sends it; nullopt unless well-formed.
std::optional<NamespaceKey> parse_namespace_key(std::string_view text);
// Lowercase hex SHA-256 of the secret.
std::string key_secret_sha256(std::string_view secret);
// Equal contents, in time that depends only on the lengths.
bool equal_in_constant_time(std::string_view a, std::string_view b);

class NamespaceKeys {
 public:
  struct Entry {
    std::string key_uuid;
    std::string secret_sha256;
  };
  void set(const std::string& ns, Entry entry);
  void erase(const std::string& ns);
  bool exists(const std::string& ns) const { return by_namespace_.count(ns) > 0; }
  // The namespace whose key this is; nullopt for a malformed, unknown or
  // wrong key (a caller says no more than "not valid").
  std::optional<std::string> authenticate(std::string_view key_text) const;
  size_t size() const { return by_namespace_.size(); }

 private:
  std::map<std::string, Entry> by_namespace_;
  std::unordered_map<std::string, std::string> namespace_by_uuid_;
};

}  // namespace stoke::agent
