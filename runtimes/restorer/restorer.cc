// stoke-restore: turns itself into the process recorded in a checkpoint image.
//
// Freestanding (no libc), static, linked at 16 TiB where no image has memory,
// with its own stack in .bss. It is exec'd as pid 1 of a fresh stoke sandbox
// with the image on fd 4 (kRestoreImageFd) and the new instance's pipes on
// fds 0-3. Steps (docs/checkpoint.md):
//
//   1. block every signal; close every fd but 0-4
//   2. read and check the image: header, manifest+table hash, table bounds
//   3. check what the image depends on: kernel, CPU, vdso, every mapped file
//      (opened now, kept open for step 6)
//      -- nothing was changed so far: any failure is a clean exit --
//   4. unmap everything but the restorer and the vdso block
//   5. move [vvar], [vvar_vclock], [vdso] to the saved addresses (same layout)
//   6. map every VMA: files from the originals, dumped memory MAP_PRIVATE from
//      the image (page cache shared by all instances), the stack copied
//   7. PR_SET_MM_MAP, signal dispositions, umask, cwd, comm, rseq,
//      set_tid_address + glibc's cached tid, the mailbox, close fds, FS base
//   8. rt_sigreturn on the saved signal frame
//
// Failures write one line to fd 2 and exit with a RestoreExit code
// (sandbox/image/restore_abi.h).
#include <asm/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#include "runtimes/common/raw_text.h"
#include "sandbox/base/raw_syscall.h"
#include "sandbox/image/restore_abi.h"
#include "sandbox/image/restore_table.h"
#include "sandbox/image/table_check.h"

using namespace stoke::image;
using stoke::raw::call;
using stoke::rawtext::Cursor;
using stoke::rawtext::Line;

// The compiler may emit calls to these for struct copies and loops.
extern "C" {
void* memcpy(void* d, const void* s, size_t n) {
  auto* dp = static_cast<unsigned char*>(d);
  auto* sp = static_cast<const unsigned char*>(s);
  for (size_t i = 0; i < n; ++i) dp[i] = sp[i];
  return d;
}
void* memset(void* d, int c, size_t n) {
  auto* dp = static_cast<unsigned char*>(d);
  for (size_t i = 0; i < n; ++i) dp[i] = static_cast<unsigned char>(c);
  return d;
}
int memcmp(const void* a, const void* b, size_t n) {
  auto* ap = static_cast<const unsigned char*>(a);
  auto* bp = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < n; ++i)
    if (ap[i] != bp[i]) return ap[i] < bp[i] ? -1 : 1;
  return 0;
}
}

// The restorer's own stack (the kernel's start-up stack is unmapped in step 4).
extern "C" {
alignas(64) char stoke_restorer_stack[64u << 10];
}

namespace {

constexpr int kImageFd = kRestoreImageFd;
// Where the vdso block waits when its current and saved places overlap.
constexpr uint64_t kVdsoParking = kRestorerBase + (512ULL << 20);

alignas(64) char g_meta[kMaxManifestBytes + kMaxTableBytes];
alignas(64) char g_text[64u << 10];
int g_fds[kMaxVmas];  // fd of the original file per kVmaFile VMA (or -1)

// Linker-provided bounds of the restorer itself.
extern "C" char __executable_start[];
extern "C" char _end[];

[[noreturn]] void exit_now(int code) {
  for (;;) call(SYS_exit_group, code);
}

[[noreturn]] void die(int code, const Line& line) {
  char out[1024];
  Line l(out, sizeof out);
  l.add("stoke-restore: ").add(line.c_str()).add("\n");
  call(SYS_write, 2, out, l.size());
  exit_now(code);
}

[[noreturn]] void die(int code, const char* message, long rc = 0) {
  char buf[512];
  Line l(buf, sizeof buf);
  l.add(message);
  if (rc < 0) l.add(" (errno ").num(-rc).add(")");
  die(code, l);
}

bool pread_all(int fd, void* dst, uint64_t len, uint64_t offset) {
  char* p = static_cast<char*>(dst);
  while (len > 0) {
    long r = call(SYS_pread64, fd, p, len, offset);
    if (r == -EINTR) continue;
    if (r <= 0) return false;
    p += r;
    len -= static_cast<uint64_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

bool is_failure(long rc) { return rc < 0 && rc > -4096; }

uint64_t monotonic_ns() {
  struct {
    long sec, nsec;
  } ts{};
  call(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, &ts);
  return static_cast<uint64_t>(ts.sec) * 1000000000ULL + static_cast<uint64_t>(ts.nsec);
}

uint64_t g_started_ns;

struct Range {
  uint64_t start = 0, end = 0;
};

struct Current {
  Range vvar, vvar_vclock, vdso;
};

// ---- steps -----------------------------------------------------------------------

const TableHeader* read_image(FileHeader* header) {
  struct stat st;
  long rc = call(SYS_fstat, kImageFd, &st);
  if (rc < 0) die(kRestoreExitImageUnreadable, "no image on fd 4", rc);
  if (!S_ISREG(st.st_mode)) die(kRestoreExitImageUnreadable, "fd 4 is not a regular file");
  if (st.st_size < static_cast<long>(sizeof(FileHeader)))
    die(kRestoreExitImageCorrupt, "image is truncated (shorter than its header)");
  if (!pread_all(kImageFd, header, sizeof *header, 0)) die(kRestoreExitImageUnreadable, "cannot read the image header");
  const char* why = nullptr;
  if (!check_file_header(*header, kImageMagic, static_cast<uint64_t>(st.st_size), &why))
    die(kRestoreExitImageCorrupt, why);
  char* manifest = g_meta;
  char* table = g_meta + kMaxManifestBytes;
  if (!pread_all(kImageFd, manifest, header->manifest_length, header->manifest_offset) ||
      !pread_all(kImageFd, table, header->table_length, header->table_offset))
    die(kRestoreExitImageUnreadable, "cannot read the image's manifest and table");
  if (hash64_2(manifest, header->manifest_length, table, header->table_length) != header->meta_hash)
    die(kRestoreExitImageCorrupt, "image manifest or restore table is corrupt (hash mismatch)");
  TableProblem p = check_table(table, header->table_length, header->data_length);
  if (p.exit_code != 0) {
    char buf[256];
    Line l(buf, sizeof buf);
    l.add(p.message);
    if (p.vma != ~0u) l.add(" (VMA ").unum(p.vma).add(")");
    die(p.exit_code, l);
  }
  return reinterpret_cast<const TableHeader*>(table);
}

const VmaRecord* vmas_of(const TableHeader* th) {
  return reinterpret_cast<const VmaRecord*>(reinterpret_cast<const char*>(th) + th->vma_offset);
}
const char* string_at(const TableHeader* th, uint32_t off) {
  return reinterpret_cast<const char*>(th) + th->strings_offset + off;
}

void check_kernel(const TableHeader* th) {
  struct utsname u;
  long rc = call(SYS_uname, &u);
  if (rc < 0) die(kRestoreExitKernelMismatch, "uname failed", rc);
  if (!stoke::rawtext::equal(u.release, th->kernel_release) || !stoke::rawtext::equal(u.version, th->kernel_version)) {
    char buf[512];
    Line l(buf, sizeof buf);
    l.add("the image was made on kernel ").add(th->kernel_release).add(" ").add(th->kernel_version)
        .add(", this is ").add(u.release).add(" ").add(u.version);
    die(kRestoreExitKernelMismatch, l);
  }
}

void check_cpu(const TableHeader* th) {
  CpuIdentity here;
  read_cpu_identity(&here);
  if (!same_cpu(here, th->cpu)) {
    char buf[256];
    Line l(buf, sizeof buf);
    l.add("the CPU differs from the image's (signature ").hex(th->cpu.signature).add(" xcr0 ").hex(th->cpu.xcr0)
        .add(" xsave ").unum(th->cpu.xsave_size).add("; here ").hex(here.signature).add(" xcr0 ").hex(here.xcr0)
        .add(" xsave ").unum(here.xsave_size).add(")");
    die(kRestoreExitCpuMismatch, l);
  }
}

// Reads /proc/self/maps: finds the vdso block and unmaps (when `unmap`) all
// that is neither the restorer nor the vdso block.
Current scan_own_mappings(bool unmap) {
  long fd = call(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(kRestoreExitKernelMismatch, "cannot open /proc/self/maps", fd);
  uint64_t n = 0;
  for (;;) {
    long r = call(SYS_read, fd, g_text + n, sizeof g_text - n);
    if (r <= 0) break;
    n += static_cast<uint64_t>(r);
    if (n == sizeof g_text) die(kRestoreExitKernelMismatch, "/proc/self/maps is unexpectedly long");
  }
  call(SYS_close, fd);
  Current cur;
  Range others[64];
  int other_count = 0;
  Cursor c{g_text, g_text + n};
  while (!c.done()) {
    const char* line;
    size_t len = c.rest_of_line(&line);
    Cursor f{line, line + len};
    Range r;
    if (f.hex(&r.start) && f.expect('-') && f.hex(&r.end)) {
      const char* name = line + len;
      while (name > line && name[-1] != ' ') --name;
      size_t name_len = static_cast<size_t>(line + len - name);
      if (stoke::rawtext::starts_with(name, name_len, "[vvar]")) cur.vvar = r;
      else if (stoke::rawtext::starts_with(name, name_len, "[vvar_vclock]")) cur.vvar_vclock = r;
      else if (stoke::rawtext::starts_with(name, name_len, "[vdso]")) cur.vdso = r;
      else if (stoke::rawtext::starts_with(name, name_len, "[vsyscall]")) {
      } else if (r.start >= kRestorerBase && r.end <= kRestorerLimit) {
      } else if (other_count < 64) {
        others[other_count++] = r;
      } else {
        die(kRestoreExitMapFailed, "too many unexpected mappings in the restorer");
      }
    }
    c.next_line();
  }
  if (unmap)
    for (int i = 0; i < other_count; ++i) {
      long rc = call(SYS_munmap, others[i].start, others[i].end - others[i].start);
      if (rc < 0) die(kRestoreExitMapFailed, "munmap of the restorer's start-up mappings failed", rc);
    }
  return cur;
}

struct SavedVdso {
  Range vvar, vvar_vclock, vdso;
};

SavedVdso saved_vdso(const TableHeader* th) {
  SavedVdso s;
  const VmaRecord* v = vmas_of(th);
  for (uint32_t i = 0; i < th->vma_count; ++i) {
    Range r{v[i].start, v[i].end};
    if (v[i].kind == kVmaVvar) s.vvar = r;
    if (v[i].kind == kVmaVvarVclock) s.vvar_vclock = r;
    if (v[i].kind == kVmaVdso) s.vdso = r;
  }
  return s;
}

void check_vdso(const TableHeader* th, const Current& cur, const SavedVdso& saved) {
  auto size = [](const Range& r) { return r.end - r.start; };
  char buf[256];
  Line l(buf, sizeof buf);
  if (cur.vdso.start == 0) die(kRestoreExitKernelMismatch, "the restorer has no [vdso]");
  if (size(cur.vdso) != th->vdso_size || size(cur.vvar) != th->vvar_size ||
      size(cur.vvar_vclock) != th->vvar_vclock_size) {
    l.add("vdso layout differs: image vvar/vclock/vdso ").unum(th->vvar_size).add("/").unum(th->vvar_vclock_size)
        .add("/").unum(th->vdso_size).add(" bytes, here ").unum(size(cur.vvar)).add("/").unum(size(cur.vvar_vclock))
        .add("/").unum(size(cur.vdso));
    die(kRestoreExitKernelMismatch, l);
  }
  // The three must keep their distances: the vdso code reaches its data
  // pages relative to its own address.
  auto offset = [](const Range& a, const Range& b) { return a.start - b.start; };
  if (offset(cur.vvar, cur.vdso) != offset(saved.vvar, saved.vdso) ||
      (th->vvar_vclock_size != 0 && offset(cur.vvar_vclock, cur.vdso) != offset(saved.vvar_vclock, saved.vdso)))
    die(kRestoreExitKernelMismatch, "vdso block layout differs from the image's");
  if (hash64(reinterpret_cast<const void*>(cur.vdso.start), size(cur.vdso)) != th->vdso_hash)
    die(kRestoreExitKernelMismatch, "the vdso differs from the image's (hash mismatch)");
}

void open_files(const TableHeader* th) {
  const VmaRecord* v = vmas_of(th);
  int last_fd = -1;
  uint32_t last_path = 0;
  for (uint32_t i = 0; i < th->vma_count; ++i) {
    g_fds[i] = -1;
    if (v[i].kind != kVmaFile) continue;
    if (v[i].path == last_path && last_fd >= 0) {
      g_fds[i] = last_fd;
      continue;
    }
    const char* path = string_at(th, v[i].path);
    long fd = call(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    char buf[600];
    Line l(buf, sizeof buf);
    if (fd < 0) {
      l.add("cannot open ").add(path).add(" (errno ").num(-fd).add(")");
      die(kRestoreExitFileMismatch, l);
    }
    struct stat st;
    long rc = call(SYS_fstat, fd, &st);
    if (rc < 0) die(kRestoreExitFileMismatch, "fstat of a mapped file failed", rc);
    const char* what = nullptr;
    uint64_t want = 0, have = 0;
    if (st.st_dev != v[i].dev) what = "device", want = v[i].dev, have = st.st_dev;
    else if (st.st_ino != v[i].ino) what = "inode", want = v[i].ino, have = st.st_ino;
    else if (static_cast<uint64_t>(st.st_size) != v[i].size) what = "size", want = v[i].size, have = static_cast<uint64_t>(st.st_size);
    else if (st.st_mtim.tv_sec != v[i].mtime_sec || st.st_mtim.tv_nsec != v[i].mtime_nsec)
      what = "mtime", want = static_cast<uint64_t>(v[i].mtime_sec), have = static_cast<uint64_t>(st.st_mtim.tv_sec);
    if (what != nullptr) {
      l.add(path).add(" differs from the file in the image: ").add(what).add(" ").unum(have)
          .add(", image has ").unum(want);
      die(kRestoreExitFileMismatch, l);
    }
    g_fds[i] = static_cast<int>(fd);
    last_fd = static_cast<int>(fd);
    last_path = v[i].path;
  }
}

void move_vdso(const Current& cur, const SavedVdso& saved) {
  if (cur.vdso.start == saved.vdso.start) return;
  const Range* from[3] = {&cur.vvar, &cur.vvar_vclock, &cur.vdso};
  const Range* to[3] = {&saved.vvar, &saved.vvar_vclock, &saved.vdso};
  uint64_t block_start = cur.vvar.start, block_end = cur.vdso.end;
  uint64_t target_start = saved.vvar.start, target_end = saved.vdso.end;
  // Overlapping old and new places: park the block in the restorer's range first.
  uint64_t parking_delta = 0;
  if (block_start < target_end && target_start < block_end) parking_delta = kVdsoParking - block_start;
  for (int step = parking_delta != 0 ? 0 : 1; step < 2; ++step) {
    for (int i = 0; i < 3; ++i) {
      if (from[i]->start == 0) continue;
      uint64_t len = from[i]->end - from[i]->start;
      uint64_t src = from[i]->start + (step == 1 ? parking_delta : 0);
      uint64_t dst = step == 0 ? from[i]->start + parking_delta : to[i]->start;
      long r = call(SYS_mremap, src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
      if (is_failure(r)) die(kRestoreExitMapFailed, "mremap of the vdso block failed", r);
    }
  }
}

void map_vmas(const TableHeader* th, const FileHeader& header) {
  const VmaRecord* v = vmas_of(th);
  for (uint32_t i = 0; i < th->vma_count; ++i) {
    const VmaRecord& r = v[i];
    const uint64_t len = r.end - r.start;
    long got = 0;
    switch (r.kind) {
      case kVmaVvar:
      case kVmaVvarVclock:
      case kVmaVdso:
        continue;
      case kVmaAnonEmpty:
        got = call(SYS_mmap, r.start, len, r.prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        break;
      case kVmaAnonData:
      case kVmaFileData:
        got = call(SYS_mmap, r.start, len, r.prot, MAP_PRIVATE | MAP_FIXED, kImageFd, header.data_offset + r.data_offset);
        break;
      case kVmaFile:
        got = call(SYS_mmap, r.start, len, r.prot, ((r.flags & kVmaShared) ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED,
                   g_fds[i], r.file_offset);
        break;
      case kVmaStack: {
        got = call(SYS_mmap, r.start, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN, -1, 0);
        if (is_failure(got)) break;
        if (!pread_all(kImageFd, reinterpret_cast<void*>(r.start + r.copy_from), len - r.copy_from,
                       header.data_offset + r.data_offset + r.copy_from))
          die(kRestoreExitMapFailed, "cannot read the saved stack from the image");
        if (r.prot != (PROT_READ | PROT_WRITE)) {
          long rc = call(SYS_mprotect, r.start, len, r.prot);
          if (rc < 0) die(kRestoreExitMapFailed, "mprotect of the stack failed", rc);
        }
        break;
      }
      default:
        die(kRestoreExitImageCorrupt, "unknown VMA kind");
    }
    if (is_failure(got) || static_cast<uint64_t>(got) != r.start) {
      char buf[256];
      Line l(buf, sizeof buf);
      l.add("mapping ").hex(r.start).add("-").hex(r.end).add(" failed (errno ").num(is_failure(got) ? -got : 0).add(")");
      die(kRestoreExitMapFailed, l);
    }
  }
}

void restore_state(const TableHeader* th) {
  struct prctl_mm_map m = {};
  m.start_code = th->mm.start_code;
  m.end_code = th->mm.end_code;
  m.start_data = th->mm.start_data;
  m.end_data = th->mm.end_data;
  m.start_brk = th->mm.start_brk;
  m.brk = th->mm.brk;
  m.start_stack = th->mm.start_stack;
  m.arg_start = th->mm.arg_start;
  m.arg_end = th->mm.arg_end;
  m.env_start = th->mm.env_start;
  m.env_end = th->mm.env_end;
  m.auxv = reinterpret_cast<__u64*>(const_cast<uint64_t*>(th->auxv));
  m.auxv_size = th->auxv_words * 8;
  m.exe_fd = static_cast<uint32_t>(-1);
  long rc = call(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0);
  if (rc < 0) die(kRestoreExitStateFailed, "prctl(PR_SET_MM_MAP) failed", rc);

  for (int sig = 1; sig <= 64; ++sig) {
    const KernelSigaction& ka = th->sigactions[sig - 1];
    if (sig == SIGKILL || sig == SIGSTOP || ka.handler == 0) continue;  // exec left SIG_DFL
    rc = call(SYS_rt_sigaction, sig, &ka, 0, 8);
    if (rc < 0) die(kRestoreExitStateFailed, "rt_sigaction failed", rc);
  }
  call(SYS_umask, th->umask);
  const char* cwd = string_at(th, th->cwd);
  if (cwd[0] != '\0') {
    rc = call(SYS_chdir, cwd);
    if (rc < 0) {
      char buf[300];
      Line l(buf, sizeof buf);
      l.add("chdir to the saved working directory ").add(cwd).add(" failed (errno ").num(-rc).add(")");
      die(kRestoreExitStateFailed, l);
    }
  }
  call(SYS_prctl, PR_SET_NAME, th->comm, 0, 0, 0);
  if (th->rseq_addr != 0) {
    rc = call(SYS_rseq, th->rseq_addr, th->rseq_len, 0, th->rseq_sig);
    if (rc < 0) die(kRestoreExitStateFailed, "rseq registration failed", rc);
  }
  long tid = call(SYS_gettid);
  if (th->tid_addr != 0) {
    call(SYS_set_tid_address, th->tid_addr);
    *reinterpret_cast<volatile int32_t*>(th->tid_addr) = static_cast<int32_t>(tid);
  }
  if (th->mailbox != 0) {
    auto* box = reinterpret_cast<volatile RestoreMailbox*>(th->mailbox);
    if (box->magic != kMailboxMagic) die(kRestoreExitStateFailed, "the restore mailbox is not where the image says");
    box->unmap_start = reinterpret_cast<uint64_t>(__executable_start);
    box->unmap_length = ((reinterpret_cast<uint64_t>(_end) + kPageSize - 1) & ~(kPageSize - 1)) -
                        reinterpret_cast<uint64_t>(__executable_start);
    box->image_fd = kImageFd;
    box->started_ns = g_started_ns;
    box->finished_ns = monotonic_ns();
    box->restored = 1;
  }
}

}  // namespace

extern "C" [[noreturn]] __attribute__((used)) void restorer_main() {
  // 1. Nothing may interrupt the transformation.
  g_started_ns = monotonic_ns();
  uint64_t all = ~0ULL;
  call(SYS_rt_sigprocmask, SIG_SETMASK, &all, 0, 8);
  call(SYS_close_range, kImageFd + 1, ~0U, 0);

  // 2-3. Everything that can be refused is checked before anything changes.
  FileHeader header;
  const TableHeader* th = read_image(&header);
  check_kernel(th);
  check_cpu(th);
  Current cur = scan_own_mappings(false);
  SavedVdso saved = saved_vdso(th);
  check_vdso(th, cur, saved);
  open_files(th);

  // 4-6. From here on the old process is being replaced.
  scan_own_mappings(true);
  move_vdso(cur, saved);
  map_vmas(th, header);

  // 7. Process state, then the last things that touch our own environment.
  restore_state(th);
  call(SYS_close_range, kImageFd, ~0U, 0);
  long rc = call(SYS_arch_prctl, ARCH_SET_FS, th->fs_base);
  if (rc < 0) die(kRestoreExitStateFailed, "arch_prctl(ARCH_SET_FS) failed", rc);

  // 8. The kernel reloads registers, FPU state and signal mask from the saved
  // frame; rt_sigreturn expects rsp just past the frame's return address,
  // which is where the ucontext starts.
  __asm__ volatile(
      "mov %0, %%rsp\n"
      "mov %1, %%eax\n"
      "syscall\n"
      "hlt\n"
      :
      : "r"(th->sigframe), "i"(SYS_rt_sigreturn)
      : "memory");
  __builtin_unreachable();
}

// Entry: switch to our own stack and call restorer_main.
__asm__(
    ".text\n"
    ".globl _start\n"
    ".type _start,@function\n"
    "_start:\n"
    "  lea stoke_restorer_stack+65536(%rip), %rsp\n"
    "  and $-16, %rsp\n"
    "  call restorer_main\n"
    "  hlt\n");

