#include "sandbox/netns_pool.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>

namespace stoke {
namespace {

Status bring_up_loopback() {
  unique_fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return sys_error("socket for loopback setup");
  struct ifreq ifr = {};
  std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return sys_error("get flags of lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return sys_error("bring up lo");
  return {};
}

}  // namespace

Result<std::shared_ptr<NetnsPool>> NetnsPool::create(size_t prefill, size_t capacity) {
  std::shared_ptr<NetnsPool> pool(new NetnsPool());
  pool->capacity_ = capacity;
  // The namespace this thread is in now is "home"; every made namespace is
  // left again by returning here.
  pool->home_.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!pool->home_) return sys_error("open /proc/thread-self/ns/net");
  for (size_t i = 0; i < prefill; ++i) {
    auto ns = pool->make_one();
    if (!ns.ok()) return ns.error();
    pool->unused_.push_back(std::move(ns.value()));
  }
  return pool;
}

Result<unique_fd> NetnsPool::make_one() {
  // unshare(CLONE_NEWNET) moves only the calling thread, so this is safe in a
  // multithreaded process; setns brings the thread straight back.
  if (::unshare(CLONE_NEWNET) != 0) return sys_error("unshare network namespace");
  unique_fd ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int open_errno = errno;
  Status lo = ns ? bring_up_loopback() : Status{};
  if (::setns(home_.get(), CLONE_NEWNET) != 0) {
    // Cannot happen for a namespace fd we hold; if it does, this thread is
    // stranded in the new namespace, which is worse than any error.
    std::abort();
  }
  if (!ns) return sys_error("open new network namespace", open_errno);
  if (!lo.ok()) return lo.error();
  return ns;
}

Result<unique_fd> NetnsPool::acquire(uint32_t owner) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = used_.size(); i-- > 0;) {
      if (used_[i].owner != owner) continue;
      unique_fd ns = std::move(used_[i].ns);
      used_.erase(used_.begin() + static_cast<std::ptrdiff_t>(i));
      return ns;
    }
    if (!unused_.empty()) {
      unique_fd ns = std::move(unused_.back());
      unused_.pop_back();
      return ns;
    }
  }
  return make_one();
}

void NetnsPool::release(uint32_t owner, unique_fd ns) {
  std::lock_guard<std::mutex> lock(mu_);
  if (capacity_ == 0) return;
  if (unused_.size() + used_.size() >= capacity_) {
    if (used_.empty()) return;
    used_.erase(used_.begin());  // the least recently released
  }
  used_.push_back({owner, std::move(ns)});
}

size_t NetnsPool::free_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unused_.size() + used_.size();
}

Result<std::unique_ptr<NetnsPool::Scope>> NetnsPool::enter(int ns) {
  if (::setns(ns, CLONE_NEWNET) != 0) return sys_error("join pooled network namespace");
  return std::unique_ptr<Scope>(new Scope(home_.get()));
}

NetnsPool::Scope::~Scope() {
  if (::setns(home_, CLONE_NEWNET) != 0) std::abort();  // see make_one
}

}  // namespace stoke
