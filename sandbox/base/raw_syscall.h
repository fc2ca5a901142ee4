// Raw system calls that never touch errno or any other libc state.
//
// The sandbox child runs after clone(CLONE_VM) and shares memory (and the TLS
// block, hence errno) with its parent, which may be a multithreaded agent. In
// that window only these calls are allowed: no malloc, no locks, no errno.
// Each returns the kernel's value: >= 0 on success, -errno on failure.
//
// C and C++: the isolation steps in sandbox/lockdown.h are shared with the C
// half of the Python zygotes (runtimes/zygote/zygote_fork.c).
#pragma once

#include <sys/syscall.h>

#if defined(__x86_64__)
static inline long stoke_raw_syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6) {
  long ret;
  register long r10 __asm__("r10") = a4;
  register long r8 __asm__("r8") = a5;
  register long r9 __asm__("r9") = a6;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
static inline long stoke_raw_syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6) {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a1;
  register long x1 __asm__("x1") = a2;
  register long x2 __asm__("x2") = a3;
  register long x3 __asm__("x3") = a4;
  register long x4 __asm__("x4") = a5;
  register long x5 __asm__("x5") = a6;
  __asm__ volatile("svc 0"
                   : "+r"(x0)
                   : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                   : "memory");
  return x0;
}
#else
#error "stoke's raw syscall layer supports x86_64 and aarch64"
#endif

// Up to six arguments, the rest zero (C callers name every argument).
#define STOKE_RAW0(n) stoke_raw_syscall6((n), 0, 0, 0, 0, 0, 0)
#define STOKE_RAW1(n, a) stoke_raw_syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define STOKE_RAW2(n, a, b) stoke_raw_syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define STOKE_RAW3(n, a, b, c) stoke_raw_syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define STOKE_RAW4(n, a, b, c, d) stoke_raw_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define STOKE_RAW5(n, a, b, c, d, e) stoke_raw_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

#ifdef __cplusplus
namespace stoke::raw {

inline long syscall6(long n, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) {
  return stoke_raw_syscall6(n, a1, a2, a3, a4, a5, a6);
}

template <typename... A>
inline long call(long n, A... args) {
  return syscall6(n, (long)args...);
}

}  // namespace stoke::raw
#endif
