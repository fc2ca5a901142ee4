// Network namespaces made ahead of time, loopback already up.
//
// A fresh network namespace is the one expensive namespace (clone with
// CLONE_NEWNET: ~0.35 ms median, ms-scale p99 on this kernel); joining a pooled
// one with setns costs ~30 µs. The namespaces are created by host root, so a
// sandbox's root (root only in its own user namespace) has no CAP_NET_ADMIN
// over its network: it can use loopback but not change routes, addresses or
// sysctls. Once every process of a sandbox is dead its namespace still holds
// what the kernel keeps per namespace: sockets draining in TIME_WAIT (visible
// with their ports in /proc/net/tcp), tcp_metrics, flow-label state. So a
// released namespace is only handed again to the same owner (a function's host
// uid); another owner gets a namespace nobody has used, made ahead or now.
#pragma once

#include <cstddef>
#include <cstdint>
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

  // A namespace fd (O_CLOEXEC) with loopback up for `owner`: one `owner`
  // released before, else an unused one (pooled, or made now).
  Result<unique_fd> acquire(uint32_t owner);
  // Return a namespace of `owner` whose processes are all dead. When the pool
  // is full the least recently released one is dropped.
  void release(uint32_t owner, unique_fd ns);
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
  std::vector<unique_fd> unused_;  // never handed out
  struct Used {
    uint32_t owner;
    unique_fd ns;
  };
  std::vector<Used> used_;  // released, oldest first
};

}  // namespace stoke
