#include "agent/namespace_keys.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>

#include <openssl/crypto.h>
#include <openssl/evp.h>

namespace stoke::agent {

namespace {

constexpr size_t kSecretLength = 64;
constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

Status random_bytes(unsigned char* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(out + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_error("read the kernel's random source");
    got += static_cast<size_t>(r);
  }
  return {};
}

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

Result<NamespaceKey> new_namespace_key() {
  unsigned char u[16];
  STOKE_TRY(random_bytes(u, sizeof u));
  u[6] = static_cast<unsigned char>((u[6] & 0x0f) | 0x40);  // version 4
  u[8] = static_cast<unsigned char>((u[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char uuid[37];
  std::snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  NamespaceKey key;
  key.uuid = uuid;
  // Rejection sampling: 248 = 4 x 62, so every letter is equally likely.
  while (key.secret.size() < kSecretLength) {
    unsigned char b[kSecretLength];
    STOKE_TRY(random_bytes(b, sizeof b));
    for (unsigned char c : b)
      if (c < 248 && key.secret.size() < kSecretLength) key.secret += kAlphabet[c % kAlphabet.size()];
  }
  return key;
}

std::optional<NamespaceKey> parse_namespace_key(std::string_view text) {
  size_t colon = text.find(':');
  if (colon != 36 || text.size() != 36 + 1 + kSecretLength) return std::nullopt;
  NamespaceKey key{std::string(text.substr(0, 36)), std::string(text.substr(37))};
  for (size_t i = 0; i < 36; ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? key.uuid[i] != '-' : !is_hex_lower(key.uuid[i])) return std::nullopt;
  }
  for (char c : key.secret)
    if (kAlphabet.find(c) == std::string_view::npos) return std::nullopt;
  return key;
}

std::string key_secret_sha256(std::string_view secret) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(secret.data(), secret.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 0xf];
  }
  return hex;
}

bool equal_in_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void NamespaceKeys::set(const std::string& ns, Entry entry) {
  erase(ns);
  namespace_by_uuid_[entry.key_uuid] = ns;
  by_namespace_[ns] = std::move(entry);
}

void NamespaceKeys::erase(const std::string& ns) {
  auto it = by_namespace_.find(ns);
  if (it == by_namespace_.end()) return;
  namespace_by_uuid_.erase(it->second.key_uuid);
  by_namespace_.erase(it);
}

std::optional<std::string> NamespaceKeys::authenticate(std::string_view key_text) const {
  auto key = parse_namespace_key(key_text);
  if (!key) return std::nullopt;
  auto ns = namespace_by_uuid_.find(key->uuid);
  if (ns == namespace_by_uuid_.end()) return std::nullopt;
  const Entry& e = by_namespace_.at(ns->second);
  if (!equal_in_constant_time(key_secret_sha256(key->secret), e.secret_sha256)) return std::nullopt;
  return ns->second;
}

}  // namespace stoke::agent
