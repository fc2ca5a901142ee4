// The default filter's argument checks, run for real: a forked child loads the
// compiled BPF (no_new_privs is all it needs, no root) and reports the errno
// each call got. Kernel truncation of int arguments is part of what is tested:
// high bits must not smuggle a denied value past a 64-bit comparison.
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include <gtest/gtest.h>

#include "sandbox/seccomp_profile.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif

namespace stoke {
namespace {

// 0 when `call` succeeded under `profile`'s filter, else its errno.
int errno_under_filter(const std::function<long()>& call, SeccompProfile profile = SeccompProfile::kDefault) {
  auto prog = seccomp_program(profile);
  EXPECT_TRUE(prog.ok()) << prog.error().message();
  if (!prog.ok()) return -1;
  sock_fprog fprog = prog.value()->fprog();
  int p[2];
  EXPECT_EQ(pipe(p), 0);
  pid_t child = fork();
  if (child == 0) {
    close(p[0]);
    int result = -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) == 0) {
      errno = 0;
      long r = call();
      result = r < 0 ? errno : 0;
    }
    (void)!write(p[1], &result, sizeof result);
    _exit(0);
  }
  close(p[1]);
  int result = -2;
  EXPECT_EQ(read(p[0], &result, sizeof result), static_cast<ssize_t>(sizeof result));
  close(p[0]);
  waitpid(child, nullptr, 0);
  return result;
}

long sock(long family, long type, long protocol = 0) { return syscall(SYS_socket, family, type, protocol); }

TEST(SeccompArguments, OnlyUnixInetInet6AndRtnetlinkSocketsCanBeCreated) {
  for (auto [family, type] : {std::pair{AF_UNIX, SOCK_STREAM}, {AF_UNIX, SOCK_DGRAM}, {AF_UNIX, SOCK_SEQPACKET},
                              {AF_INET, SOCK_STREAM}, {AF_INET, SOCK_DGRAM}, {AF_INET6, SOCK_STREAM},
                              {AF_INET6, SOCK_DGRAM}})
    EXPECT_EQ(errno_under_filter([=] { return sock(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK); }), 0)
        << family << "/" << type;
  EXPECT_EQ(errno_under_filter([] { return sock(AF_INET, SOCK_STREAM, IPPROTO_TCP); }), 0);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE); }), 0);

  EXPECT_EQ(errno_under_filter([] { return sock(AF_VSOCK, SOCK_STREAM); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_ALG, SOCK_SEQPACKET); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_PACKET, SOCK_RAW); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_INET, SOCK_RAW, IPPROTO_ICMP); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_INET6, SOCK_RAW, IPPROTO_RAW); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_INET, SOCK_PACKET); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_INET, SOCK_STREAM, IPPROTO_SCTP); }), EPERM);
  EXPECT_EQ(errno_under_filter([] { return sock(AF_INET, SOCK_DCCP, IPPROTO_DCCP); }), EPERM);
  // The kernel reads the family as an int: AF_VSOCK with AF_INET in the high
  // half is still AF_VSOCK.
  EXPECT_EQ(errno_under_filter([] { return sock((long{AF_INET} << 32) | AF_VSOCK, SOCK_STREAM); }), EPERM);
  EXPECT_EQ(errno_under_filter([] {
              int sv[2];
              return syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv);
            }),
            0);
  EXPECT_EQ(errno_under_filter([] {
              int sv[2];
              return syscall(SYS_socketpair, AF_VSOCK, SOCK_STREAM, 0, sv);
            }),
            EPERM);
}

TEST(SeccompArguments, ZygoteProfilesRefuseTheSameSocketFamilies) {
  for (auto profile : {SeccompProfile::kZygoteMaker, SeccompProfile::kFunctionZygote}) {
    EXPECT_EQ(errno_under_filter([] { return sock(AF_VSOCK, SOCK_STREAM); }, profile), EPERM);
    EXPECT_EQ(errno_under_filter([] { return sock(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC); }, profile), 0);
  }
}

TEST(SeccompArguments, TiocstiAndTioclinuxFailWithEioOtherIoctlsWork) {
  EXPECT_EQ(errno_under_filter([] {
              char c = 'x';
              return syscall(SYS_ioctl, -1, TIOCSTI, &c);  // no terminal is touched if the check fails
            }),
            EIO);
  // The request is an unsigned int to the kernel: high bits do not help.
  EXPECT_EQ(errno_under_filter([] {
              char c = 'x';
              return syscall(SYS_ioctl, -1, (1UL << 32) | TIOCSTI, &c);
            }),
            EIO);
  EXPECT_EQ(errno_under_filter([] {
              char sub = 2;  // TIOCL_SETSEL
              return syscall(SYS_ioctl, -1, TIOCLINUX, &sub);
            }),
            EIO);
  EXPECT_EQ(errno_under_filter([] {
              int p[2];
              if (pipe(p) != 0) return -1L;
              int n = 0;
              return syscall(SYS_ioctl, p[0], FIONREAD, &n);
            }),
            0);
}

TEST(SeccompArguments, InotifyReportsNotImplemented) {
  EXPECT_EQ(errno_under_filter([] { return syscall(SYS_inotify_init1, IN_CLOEXEC); }), ENOSYS);
#ifdef SYS_inotify_init
  EXPECT_EQ(errno_under_filter([] { return syscall(SYS_inotify_init); }), ENOSYS);
#endif
}

TEST(SeccompArguments, CoreLimitCannotBeChangedOtherLimitsCan) {
  EXPECT_EQ(errno_under_filter([] {
              struct rlimit zero = {0, 0};
              return syscall(SYS_setrlimit, RLIMIT_CORE, &zero);
            }),
            EPERM);
  EXPECT_EQ(errno_under_filter([] {
              struct rlimit zero = {0, 0};
              return syscall(SYS_prlimit64, 0, RLIMIT_CORE, &zero, nullptr);
            }),
            EPERM);
  EXPECT_EQ(errno_under_filter([] {
              struct rlimit zero = {0, 0};
              return syscall(SYS_prlimit64, 0, (1UL << 32) | RLIMIT_CORE, &zero, nullptr);
            }),
            EPERM);
  EXPECT_EQ(errno_under_filter([] {
              struct rlimit current;
              return syscall(SYS_prlimit64, 0, RLIMIT_CORE, nullptr, &current);
            }),
            0);
  EXPECT_EQ(errno_under_filter([] {
              struct rlimit r;
              getrlimit(RLIMIT_NOFILE, &r);
              return syscall(SYS_setrlimit, RLIMIT_NOFILE, &r);
            }),
            0);
}

}  // namespace
}  // namespace stoke
