// Network namespaces made ahead of time, loopback already up.
//
// A fresh network namespace is the one expensive namespace (clone with
// CLONE_NEWNET: ~0.35 ms median, ms-scale p99 on this kernel); joining a pooled
// one with setns costs ~30 µs. The namespaces are created by host root, so a
// sandbox's root (root only in its own user namespace) has no CAP_NET_ADMIN
// over its network: it can use loopback but not change routes, addresses or
// sysctls. That is also what makes reuse safe: once every process of a sandbox
// is dead its namespace holds nothing the next sandbox could use, apart from
// sockets still draining (TIME_WAIT), so release() puts it back. Callers that
// must not share even that between tenants keep one pool per tenant, or drop
// the namespace instead of releasing it.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke {

class NetnsPool {
 public:
  // Makes `prefill` namespaces now; keeps at most `capacity` free ones.
  static Result<std::shared_ptr<NetnsPool>> create(size_t prefill, size_t capacity);

  // A namespace fd (O_CLOEXEC) with loopback up: pooled, or made now.
  Result<unique_fd> acquire();
  // Return a namespace whose processes are all dead.
  void release(unique_fd ns);
  size_t free_count() const;

  // The calling thread enters `ns` until the Scope ends (then returns to the
  // thread's previous network namespace). For clone() of a sandbox child,
  // which inherits the thread's namespace.
  class Scope {
   public:
    ~Scope();
    Scope(Scope&&) = delete;

   private:
    friend class NetnsPool;
    explicit Scope(int home) : home_(home) {}
    int home_;
  };
  Result<std::unique_ptr<Scope>> enter(int ns);

 private:
  NetnsPool() = default;
  Result<unique_fd> make_one();

  unique_fd home_;  // the host network namespace of the creating process
  size_t capacity_ = 0;
  mutable std::mutex mu_;
  std::vector<unique_fd> free_;
};

}  // namespace stoke
