// libstoke_checkpoint.so: the process dumps itself.
//
// Loaded into the runtime (CPython through ctypes) and called once, at the
// runtime's ready point. It raises a signal at itself: the kernel's signal
// frame then holds the complete CPU context (registers, FPU/XSAVE state,
// signal mask), and the handler writes that frame together with the memory
// and the process state as a raw dump (sandbox/image/restore_table.h) to the
// caller's fd. The agent turns the raw dump into a final image
// (sandbox/image/image.h: finalize_image) outside the sandbox.
//
// The handler runs in the middle of whatever the process was doing, so it
// uses raw system calls and a scratch mapping made beforehand: no malloc, no
// stdio, no errno, no locks. The scratch mapping is left out of the dump.
//
// Restoring resumes execution right after the signal, inside
// stoke_checkpoint(): the restorer has filled in the mailbox below, so the
// same call returns 1 there (and 0 in the original process).
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <asm/prctl.h>
#include <ucontext.h>

#include <stddef.h>
#include <stdint.h>

#include "runtimes/common/raw_text.h"
#include "sandbox/base/raw_syscall.h"
#include "sandbox/image/restore_table.h"

namespace {

using namespace stoke::image;
using stoke::raw::call;
using stoke::rawtext::Cursor;
using stoke::rawtext::Line;

// SIGRTMAX: no runtime we host uses it. Its disposition is saved before and
// put back after, and the dump records the saved one.
constexpr int kDumpSignal = 64;

// Scratch layout (one anonymous mapping, made before the signal and excluded
// from the dump): the table as it is built, a string area, read buffers.
constexpr size_t kTableArea = kMaxTableBytes;
constexpr size_t kStringArea = 512u << 10;
constexpr size_t kReadArea = 256u << 10;
constexpr size_t kPagemapEntries = 8192;
constexpr size_t kScratchSize = kTableArea + kStringArea + kReadArea + kPagemapEntries * 8;

struct State {
  int dump_fd = -1;
  char* scratch = nullptr;
  KernelSigaction saved_action{};  // kDumpSignal's disposition before we took it
  uint64_t saved_mask = 0;         // the signal mask before we unblocked it
  uint64_t rseq_addr = 0;
  uint32_t rseq_len = 0;
  uint64_t tid_addr = 0;
  uint64_t fs_base = 0;
  bool failed = false;
  char error[640] = {};
};

State g;

// Written by the restorer in the restored process (see RestoreMailbox).
volatile RestoreMailbox g_mailbox = {kMailboxMagic, 0, 0, 0, 0, 0, 0, 0};

Line fail_line() {
  g.failed = true;
  return Line(g.error, sizeof g.error);
}

// Sets the error (first one wins) and returns false.
bool fail(const char* what, long rc = 0) {
  if (g.failed) return false;
  Line l = fail_line();
  l.add(what);
  if (rc < 0) l.add(" (errno ").num(-rc).add(")");
  return false;
}

// ---- small raw I/O -----------------------------------------------------------

// Reads a whole (small) file into buf; returns bytes read or -errno.
long read_small_file(const char* path, char* buf, size_t cap) {
  long fd = call(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fd;
  size_t n = 0;
  while (n < cap) {
    long r = call(SYS_read, fd, buf + n, cap - n);
    if (r < 0) {
      call(SYS_close, fd);
      return r;
    }
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  call(SYS_close, fd);
  return static_cast<long>(n);
}

bool pwrite_all(const void* src, uint64_t len, uint64_t offset) {
  const char* p = static_cast<const char*>(src);
  while (len > 0) {
    long r = call(SYS_pwrite64, g.dump_fd, p, len, offset);
    if (r == -EINTR) continue;
    if (r <= 0) return fail("writing the dump failed", r == 0 ? -EIO : r);
    p += r;
    len -= static_cast<uint64_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

bool page_is_zero(const void* page) {
  const uint64_t* w = static_cast<const uint64_t*>(page);
  for (size_t i = 0; i < kPageSize / 8; i += 4)
    if ((w[i] | w[i + 1] | w[i + 2] | w[i + 3]) != 0) return false;
  return true;
}

// ---- the table being built -----------------------------------------------------

struct Builder {
  TableHeader* th;
  VmaRecord* vmas;
  char* strings;
  uint32_t strings_len;
  uint32_t last_path;  // to share one string between a file's VMAs
  uint64_t data_len;
};

uint32_t add_string(Builder& b, const char* s, size_t n) {
  if (b.strings_len + n + 1 > kStringArea) return 0;
  uint32_t at = b.strings_len;
  stoke::rawtext::copy_bytes(b.strings + at, s, n);
  b.strings[at + n] = '\0';
  b.strings_len += static_cast<uint32_t>(n + 1);
  return at;
}

uint32_t add_path(Builder& b, const char* s, size_t n) {
  if (b.last_path != 0) {
    const char* prev = b.strings + b.last_path;
    size_t pn = stoke::rawtext::length(prev);
    bool same = pn == n;
    for (size_t i = 0; same && i < n; ++i) same = prev[i] == s[i];
    if (same) return b.last_path;
  }
  b.last_path = add_string(b, s, n);
  return b.last_path;
}

// ---- process state -------------------------------------------------------------

bool read_mm_fields(TableHeader* th, char* buf) {
  long n = read_small_file("/proc/self/stat", buf, kReadArea);
  if (n <= 0) return fail("cannot read /proc/self/stat", n);
  // Fields after the comm, which is in parentheses and may contain anything.
  const char* p = buf + n;
  while (p > buf && p[-1] != ')') --p;
  Cursor c{p, buf + n};
  uint64_t field[64] = {};
  int index = 3;  // the state letter is field 3
  c.skip_spaces();
  c.p++;  // state
  while (!c.done() && index < 60) {
    c.skip_spaces();
    ++index;
    if (c.expect('-')) {  // negative numbers (priority, nice) are not needed
      uint64_t ignored;
      c.dec(&ignored);
      continue;
    }
    if (!c.dec(&field[index])) break;
  }
  if (index < 51) return fail("/proc/self/stat has fewer fields than expected");
  MmFields& mm = th->mm;
  mm.start_code = field[26];
  mm.end_code = field[27];
  mm.start_stack = field[28];
  mm.start_data = field[45];
  mm.end_data = field[46];
  mm.start_brk = field[47];
  mm.arg_start = field[48];
  mm.arg_end = field[49];
  mm.env_start = field[50];
  mm.env_end = field[51];
  long brk = call(SYS_brk, 0);
  mm.brk = static_cast<uint64_t>(brk);
  return true;
}

bool read_auxv(TableHeader* th, char* buf) {
  long n = read_small_file("/proc/self/auxv", buf, kReadArea);
  if (n <= 0) return fail("cannot read /proc/self/auxv", n);
  size_t words = static_cast<size_t>(n) / 8;
  if (words > kMaxAuxvWords) return fail("the auxiliary vector is larger than the image can hold");
  stoke::rawtext::copy_bytes(th->auxv, buf, words * 8);
  th->auxv_words = static_cast<uint32_t>(words);
  return true;
}

bool read_process_state(Builder& b, char* buf) {
  TableHeader* th = b.th;
  for (int sig = 1; sig <= 64; ++sig) {
    KernelSigaction ka{};
    if (sig == kDumpSignal) {
      ka = g.saved_action;
    } else if (sig != SIGKILL && sig != SIGSTOP) {
      long r = call(SYS_rt_sigaction, sig, 0, &ka, 8);
      if (r < 0) return fail("rt_sigaction (query) failed", r);
    }
    th->sigactions[sig - 1] = ka;
  }
  long old = call(SYS_umask, 0);
  call(SYS_umask, old);
  th->umask = static_cast<uint32_t>(old);
  long n = call(SYS_getcwd, buf, 4096);
  if (n <= 0) return fail("getcwd failed", n);
  th->cwd = add_string(b, buf, stoke::rawtext::length(buf));
  call(SYS_prctl, PR_GET_NAME, th->comm, 0, 0, 0);
  th->pid = static_cast<int32_t>(call(SYS_getpid));
  th->tid = static_cast<int32_t>(call(SYS_gettid));
  th->fs_base = g.fs_base;
  th->rseq_addr = g.rseq_addr;
  th->rseq_len = g.rseq_len;
  th->rseq_sig = RSEQ_SIG;
  th->tid_addr = g.tid_addr;
  th->mailbox = reinterpret_cast<uint64_t>(&g_mailbox);
  struct utsname u;
  long r = call(SYS_uname, &u);
  if (r < 0) return fail("uname failed", r);
  static_assert(sizeof u.release <= sizeof th->kernel_release);
  stoke::rawtext::copy_bytes(th->kernel_release, u.release, sizeof u.release);
  stoke::rawtext::copy_bytes(th->kernel_version, u.version, sizeof u.version);
  read_cpu_identity(&th->cpu);
  if (!read_mm_fields(th, buf)) return false;
  return read_auxv(th, buf);
}

// ---- /proc/self/smaps -----------------------------------------------------------

struct ParsedVma {
  uint64_t start, end, offset, inode;
  char perms[4];
  const char* name;
  size_t name_len;
  uint64_t anonymous_kb, swap_kb;
};

bool name_is(const ParsedVma& v, const char* s) {
  size_t n = stoke::rawtext::length(s);
  return v.name_len == n && stoke::rawtext::starts_with(v.name, v.name_len, s);
}

Line vma_problem(const ParsedVma& v) {
  Line l = fail_line();
  l.add("cannot checkpoint: mapping ").hex(v.start).add("-").hex(v.end).add(" ");
  if (v.name_len > 0) l.add(v.name, v.name_len > 200 ? 200 : v.name_len);
  else l.add("(anonymous)");
  return l;
}

uint32_t prot_of(const char* perms) {
  return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
         (perms[2] == 'x' ? PROT_EXEC : 0);
}

// One finished smaps entry becomes a VmaRecord.
bool add_vma(Builder& b, const ParsedVma& v) {
  const uint64_t scratch = reinterpret_cast<uint64_t>(g.scratch);
  if (v.start == scratch && v.end == scratch + kScratchSize) return true;  // ours, not the process's
  if (v.start < scratch + kScratchSize && scratch < v.end) {
    vma_problem(v).add(" merged with the checkpoint's scratch memory");
    return false;
  }
  if (name_is(v, "[vsyscall]")) return true;  // fixed, the same in every process
  if (b.th->vma_count >= kMaxVmas) return fail("cannot checkpoint: more than 16384 mappings");
  if (v.start >= kRestorerBase && v.start < kRestorerLimit) {
    vma_problem(v).add(" lies in the range reserved for the restorer");
    return false;
  }
  VmaRecord& r = b.vmas[b.th->vma_count];
  r = VmaRecord{};
  r.start = v.start;
  r.end = v.end;
  r.prot = prot_of(v.perms);
  r.data_offset = kNoData;
  const uint64_t length = v.end - v.start;
  const bool named = v.name_len > 0;
  // Read-only shared file mappings are mapped again from the file; shared
  // memory that can be written (or anonymous shared memory) would no longer be
  // shared with anyone after a restore.
  if (v.perms[3] == 's' && (v.perms[1] == 'w' || v.name_len == 0 || v.name[0] != '/' ||
                            v.anonymous_kb != 0 || stoke::rawtext::starts_with(v.name, v.name_len, "/SYSV") ||
                            stoke::rawtext::starts_with(v.name, v.name_len, "/dev/"))) {
    vma_problem(v).add(" is shared memory (MAP_SHARED / shm); only private memory can be checkpointed");
    return false;
  }
  if (name_is(v, "[vvar]") || name_is(v, "[vvar_vclock]") || name_is(v, "[vdso]")) {
    r.kind = name_is(v, "[vvar]") ? kVmaVvar : name_is(v, "[vvar_vclock]") ? kVmaVvarVclock : kVmaVdso;
    if (r.kind == kVmaVvar) b.th->vvar_size = length;
    if (r.kind == kVmaVvarVclock) b.th->vvar_vclock_size = length;
    if (r.kind == kVmaVdso) {
      b.th->vdso_size = length;
      b.th->vdso_hash = hash64(reinterpret_cast<const void*>(v.start), length);
    }
  } else if (name_is(v, "[stack]")) {
    r.kind = kVmaStack;
  } else if (!named || name_is(v, "[heap]")) {
    r.kind = (v.anonymous_kb + v.swap_kb) > 0 ? kVmaAnonData : kVmaAnonEmpty;
  } else if (v.name[0] == '/') {
    static constexpr char kDeleted[] = " (deleted)";
    constexpr size_t kd = sizeof kDeleted - 1;
    if (v.name_len > kd && stoke::rawtext::starts_with(v.name + v.name_len - kd, kd, kDeleted)) {
      vma_problem(v).add(" is a deleted file (or memfd), which cannot be mapped again");
      return false;
    }
    uint32_t path = add_path(b, v.name, v.name_len);
    if (path == 0) return fail("cannot checkpoint: too many mapped file names");
    struct stat st;
    long rc = call(SYS_newfstatat, AT_FDCWD, b.strings + path, &st, 0);
    if (rc < 0) {
      vma_problem(v).add(": stat failed (errno ").num(-rc).add(")");
      return false;
    }
    if (static_cast<uint64_t>(st.st_ino) != v.inode) {
      vma_problem(v).add(": the file at this path was replaced after it was mapped");
      return false;
    }
    r.path = path;
    r.file_offset = v.offset;
    r.dev = st.st_dev;
    r.ino = st.st_ino;
    r.size = static_cast<uint64_t>(st.st_size);
    r.mtime_sec = st.st_mtim.tv_sec;
    r.mtime_nsec = st.st_mtim.tv_nsec;
    r.kind = (v.anonymous_kb + v.swap_kb) > 0 ? kVmaFileData : kVmaFile;
    if (v.perms[3] == 's') r.flags |= kVmaShared;
  } else {
    vma_problem(v).add(" is a special kernel mapping the restorer cannot recreate");
    return false;
  }
  if (r.kind == kVmaAnonData || r.kind == kVmaFileData || r.kind == kVmaStack) {
    r.data_offset = b.data_len;
    b.data_len += length;
  }
  b.th->vma_count++;
  return true;
}

// Parses one smaps header line: "start-end perms offset maj:min inode   name".
bool parse_header(Cursor c, ParsedVma* v) {
  *v = ParsedVma{};
  uint64_t ignored;
  if (!c.hex(&v->start) || !c.expect('-') || !c.hex(&v->end)) return false;
  c.skip_spaces();
  for (int i = 0; i < 4; ++i) v->perms[i] = c.done() ? '-' : *c.p++;
  c.skip_spaces();
  if (!c.hex(&v->offset)) return false;
  c.skip_spaces();
  if (!c.hex(&ignored) || !c.expect(':') || !c.hex(&ignored)) return false;
  c.skip_spaces();
  if (!c.dec(&v->inode)) return false;
  c.skip_spaces();
  v->name_len = c.rest_of_line(&v->name);
  return true;
}

bool read_vmas(Builder& b, char* buf) {
  long fd = call(SYS_openat, AT_FDCWD, "/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail("cannot open /proc/self/smaps", fd);
  size_t have = 0;
  bool in_vma = false, ok = true, eof = false;
  ParsedVma v{};
  // The name of the VMA being parsed must outlive the buffer refills:
  // keep a copy.
  static char name_copy[4096];
  while (ok && !eof) {
    long r = call(SYS_read, fd, buf + have, kReadArea - have);
    if (r < 0) {
      ok = fail("reading /proc/self/smaps failed", r);
      break;
    }
    if (r == 0) eof = true;
    have += static_cast<size_t>(r);
    // Process complete lines.
    Cursor c{buf, buf + have};
    while (ok) {
      const char* line;
      size_t n = c.rest_of_line(&line);
      if (line + n >= c.end && !eof) break;  // incomplete line: read more
      if (n == 0 && c.done()) break;
      char first = line[0];
      bool header = (first >= '0' && first <= '9') || (first >= 'a' && first <= 'f');
      if (header) {
        if (in_vma) ok = add_vma(b, v);
        if (!ok) break;
        if (!parse_header(Cursor{line, line + n}, &v)) {
          ok = fail("cannot parse /proc/self/smaps");
          break;
        }
        size_t keep = v.name_len < sizeof name_copy ? v.name_len : sizeof name_copy - 1;
        stoke::rawtext::copy_bytes(name_copy, v.name, keep);
        v.name = name_copy;
        v.name_len = keep;
        in_vma = true;
      } else if (stoke::rawtext::starts_with(line, n, "Anonymous:")) {
        Cursor f{line + 10, line + n};
        f.skip_spaces();
        f.dec(&v.anonymous_kb);
      } else if (stoke::rawtext::starts_with(line, n, "Swap:")) {
        Cursor f{line + 5, line + n};
        f.skip_spaces();
        f.dec(&v.swap_kb);
      }
      c.p = line + n;
      c.next_line();
      if (c.done()) break;
    }
    // Keep the unprocessed tail at the front of the buffer.
    size_t used = static_cast<size_t>(c.p - buf);
    for (size_t i = used; i < have; ++i) buf[i - used] = buf[i];
    have -= used;
    if (have == kReadArea) ok = fail("a line of /proc/self/smaps is too long");
  }
  call(SYS_close, fd);
  if (ok && in_vma) ok = add_vma(b, v);
  return ok;
}

// ---- memory contents -------------------------------------------------------------

// Writes the non-zero pages among [from, to) of the VMA. Anonymous memory is
// walked with /proc/self/pagemap so that pages never touched are not even
// read (reading them would fault in the zero page, or swap in).
bool write_pages(const VmaRecord& r, uint64_t from, uint64_t to, uint64_t data_base, uint64_t* pagemap,
                 long pagemap_fd, uint64_t* written) {
  const bool file = r.kind == kVmaFileData;
  uint64_t run_start = 0, run_len = 0;
  auto flush = [&]() {
    if (run_len == 0) return true;
    bool ok = pwrite_all(reinterpret_cast<const void*>(run_start), run_len,
                         data_base + r.data_offset + (run_start - r.start));
    *written += run_len;
    run_len = 0;
    return ok;
  };
  for (uint64_t base = from; base < to; base += kPagemapEntries * kPageSize) {
    uint64_t pages = (to - base) / kPageSize;
    if (pages > kPagemapEntries) pages = kPagemapEntries;
    if (!file) {
      long n = call(SYS_pread64, pagemap_fd, pagemap, pages * 8, (base / kPageSize) * 8);
      if (n != static_cast<long>(pages * 8)) return fail("reading /proc/self/pagemap failed", n < 0 ? n : -EIO);
    }
    for (uint64_t i = 0; i < pages; ++i) {
      uint64_t addr = base + i * kPageSize;
      bool maybe_data = true;
      if (!file) maybe_data = (pagemap[i] >> 62) != 0;  // bit 63 present, bit 62 swapped
      if (file && r.file_offset + (addr - r.start) >= r.size) maybe_data = false;  // past EOF: SIGBUS
      if (maybe_data && !page_is_zero(reinterpret_cast<const void*>(addr))) {
        if (run_len > 0 && run_start + run_len == addr) {
          run_len += kPageSize;
        } else {
          if (!flush()) return false;
          run_start = addr;
          run_len = kPageSize;
        }
      }
    }
  }
  return flush();
}

bool write_data(Builder& b, uint64_t data_base, uint64_t* pagemap, uint64_t sigframe) {
  long pagemap_fd = call(SYS_openat, AT_FDCWD, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap_fd < 0) return fail("cannot open /proc/self/pagemap", pagemap_fd);
  bool ok = true;
  uint64_t written = 0;
  for (uint32_t i = 0; ok && i < b.th->vma_count; ++i) {
    VmaRecord& r = b.vmas[i];
    if (r.data_offset == kNoData) continue;
    uint64_t from = r.start;
    if (r.kind == kVmaStack) {
      // Below the signal frame is only the handler's own (dead) stack.
      uint64_t frame_page = (sigframe - 8) & ~(kPageSize - 1);
      if (frame_page < r.start || frame_page >= r.end) {
        ok = fail("the signal frame is not on the main stack (sigaltstack in use?)");
        break;
      }
      from = frame_page;
      r.copy_from = from - r.start;
    }
    // Memory the process made unreadable is read through a temporary mprotect.
    const bool unreadable = (r.prot & PROT_READ) == 0;
    if (unreadable) {
      long rc = call(SYS_mprotect, r.start, r.end - r.start, r.prot | PROT_READ);
      if (rc < 0) {
        ok = fail("mprotect to read an inaccessible mapping failed", rc);
        break;
      }
    }
    ok = write_pages(r, from, r.end, data_base, pagemap, pagemap_fd, &written);
    if (unreadable) call(SYS_mprotect, r.start, r.end - r.start, r.prot);
  }
  call(SYS_close, pagemap_fd);
  b.th->dumped_bytes = written;
  return ok;
}

void dump(uint64_t sigframe) {
  char* table = g.scratch;
  char* strings = g.scratch + kTableArea;
  char* readbuf = strings + kStringArea;
  uint64_t* pagemap = reinterpret_cast<uint64_t*>(readbuf + kReadArea);
  Builder b{};
  b.th = reinterpret_cast<TableHeader*>(table);
  *b.th = TableHeader{};
  b.vmas = reinterpret_cast<VmaRecord*>(table + sizeof(TableHeader));
  b.strings = strings;
  b.strings[0] = '\0';
  b.strings_len = 1;
  b.th->magic = kTableMagic;
  b.th->version = kFormatVersion;
  b.th->sigframe = sigframe;
  if (!read_process_state(b, readbuf)) return;
  if (!read_vmas(b, readbuf)) return;
  if (b.th->vdso_size == 0) {
    fail("cannot checkpoint: the process has no [vdso]");
    return;
  }

  // Table: header, VMAs, strings; then the data area on a page boundary.
  uint64_t vma_bytes = uint64_t{b.th->vma_count} * sizeof(VmaRecord);
  uint64_t table_len = sizeof(TableHeader) + vma_bytes + b.strings_len;
  table_len = (table_len + 7) & ~uint64_t{7};
  if (table_len > kMaxTableBytes) {
    fail("cannot checkpoint: the restore table would exceed 2 MiB");
    return;
  }
  b.th->vma_offset = sizeof(TableHeader);
  b.th->strings_offset = static_cast<uint32_t>(sizeof(TableHeader) + vma_bytes);
  b.th->strings_length = b.strings_len;
  b.th->table_length = static_cast<uint32_t>(table_len);
  const uint64_t table_offset = sizeof(FileHeader);
  const uint64_t data_base = (table_offset + table_len + kPageSize - 1) & ~(kPageSize - 1);

  if (!write_data(b, data_base, pagemap, sigframe)) return;
  long rc = call(SYS_ftruncate, g.dump_fd, data_base + b.data_len);
  if (rc < 0) {
    fail("sizing the dump file failed", rc);
    return;
  }
  // The strings go right after the VMAs (the area they were built in is separate).
  char* table_strings = table + b.th->strings_offset;
  stoke::rawtext::copy_bytes(table_strings, strings, b.strings_len);
  for (uint64_t i = sizeof(TableHeader) + vma_bytes + b.strings_len; i < table_len; ++i) table[i] = 0;
  if (!pwrite_all(table, table_len, table_offset)) return;

  FileHeader h{};
  stoke::rawtext::copy_bytes(h.magic, kDumpMagic, 8);
  h.version = kFormatVersion;
  h.header_size = sizeof(FileHeader);
  h.manifest_offset = table_offset;
  h.manifest_length = 0;
  h.table_offset = table_offset;
  h.table_length = table_len;
  h.data_offset = data_base;
  h.data_length = b.data_len;
  h.meta_hash = hash64_2(table, 0, table, table_len);
  h.header_hash = hash64(&h, offsetof(FileHeader, header_hash));
  pwrite_all(&h, sizeof h, 0);
}

void on_dump_signal(int, siginfo_t*, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  // The frame's mask is what rt_sigreturn installs in the restored process:
  // make it the caller's mask (we had unblocked our signal to take it).
  stoke::rawtext::copy_bytes(&uc->uc_sigmask, &g.saved_mask, 8);
  dump(reinterpret_cast<uint64_t>(uc));
}

// ---- checks before the signal (ordinary context) ------------------------------------

bool check_single_thread(char* buf, size_t cap) {
  long n = read_small_file("/proc/self/status", buf, cap);
  if (n <= 0) return fail("cannot read /proc/self/status", n);
  Cursor c{buf, buf + n};
  while (!c.done()) {
    const char* line;
    size_t len = c.rest_of_line(&line);
    if (stoke::rawtext::starts_with(line, len, "Threads:")) {
      Cursor f{line + 8, line + len};
      f.skip_spaces();
      uint64_t threads = 0;
      f.dec(&threads);
      if (threads != 1) {
        fail_line().add("cannot checkpoint: the process has ").unum(threads)
            .add(" threads; only a single-threaded process can be checkpointed");
        return false;
      }
      return true;
    }
    c.next_line();
  }
  return fail("/proc/self/status has no Threads line");
}

bool check_fds(int dump_fd, char* buf, size_t cap) {
  long dir = call(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return fail("cannot open /proc/self/fd", dir);
  bool ok = true;
  for (;;) {
    long n = call(SYS_getdents64, dir, buf, cap);
    if (n <= 0) {
      if (n < 0) ok = fail("reading /proc/self/fd failed", n);
      break;
    }
    for (long off = 0; ok && off < n;) {
      // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name
      uint16_t reclen;
      stoke::rawtext::copy_bytes(&reclen, buf + off + 16, 2);
      const char* name = buf + off + 19;
      off += reclen;
      if (name[0] < '0' || name[0] > '9') continue;
      uint64_t fd = 0;
      Cursor c{name, name + stoke::rawtext::length(name)};
      c.dec(&fd);
      if (fd <= 3 || static_cast<long>(fd) == dump_fd || static_cast<long>(fd) == dir) continue;
      char link[64], target[256] = {};
      Line(link, sizeof link).add("/proc/self/fd/").unum(fd);
      long tn = call(SYS_readlinkat, AT_FDCWD, link, target, sizeof target - 1);
      if (tn < 0) tn = 0;
      fail_line().add("cannot checkpoint: fd ").unum(fd).add(" (").add(target, static_cast<size_t>(tn))
          .add(") is open; only fds 0-3 and the dump fd may be open at a checkpoint");
      ok = false;
    }
    if (!ok) break;
  }
  call(SYS_close, dir);
  return ok;
}

bool check_dump_fd(int fd) {
  struct stat st;
  long rc = call(SYS_fstat, fd, &st);
  if (rc < 0) return fail("the dump fd is not open", rc);
  if (!S_ISREG(st.st_mode)) return fail("the dump fd must be a regular file (it is written at offsets)");
  long fl = call(SYS_fcntl, fd, F_GETFL);
  if (fl < 0) return fail("fcntl on the dump fd failed", fl);
  if ((fl & O_ACCMODE) == O_RDONLY) return fail("the dump fd is not open for writing");
  if (fl & O_APPEND) return fail("the dump fd must not be O_APPEND (it is written at offsets)");
  return true;
}

}  // namespace

extern "C" {

// Checkpoints the calling process to dump_fd (a regular file open for writing).
// Returns 0 in the original process once the dump is written, 1 when the
// process is a restored copy resuming here, and -1 when the process cannot be
// checkpointed or the dump failed; then error (error_len bytes) says why.
__attribute__((visibility("default"))) int stoke_checkpoint(int dump_fd, char* error, size_t error_len) {
  g.failed = false;
  g.error[0] = '\0';
  g.dump_fd = dump_fd;
  int result = -1;
  char buf[4096];
  if (check_dump_fd(dump_fd) && check_single_thread(buf, sizeof buf) && check_fds(dump_fd, buf, sizeof buf)) {
    long scratch = call(SYS_mmap, 0, kScratchSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch < 0 && scratch > -4096) {
      fail("cannot map scratch memory for the checkpoint", scratch);
    } else {
      g.scratch = reinterpret_cast<char*>(scratch);
      // Different VMA flags: the kernel never merges it with the process's memory.
      call(SYS_madvise, scratch, kScratchSize, MADV_DONTFORK);
      uint64_t fs = 0;
      call(SYS_arch_prctl, ARCH_GET_FS, &fs);
      g.fs_base = fs;
      g.rseq_addr = 0;
      g.rseq_len = 0;
      if (__rseq_size > 0) {
        g.rseq_addr = fs + static_cast<uint64_t>(__rseq_offset);
        g.rseq_len = __rseq_size < 32 ? 32 : __rseq_size;
      }
      g.tid_addr = 0;
      call(SYS_prctl, PR_GET_TID_ADDRESS, &g.tid_addr, 0, 0, 0);

      // Take the signal: save the old disposition and mask, unblock ours.
      call(SYS_rt_sigaction, kDumpSignal, 0, &g.saved_action, 8);
      struct sigaction sa = {};
      sa.sa_sigaction = on_dump_signal;
      sa.sa_flags = SA_SIGINFO;
      sigfillset(&sa.sa_mask);
      sigaction(kDumpSignal, &sa, nullptr);
      call(SYS_rt_sigprocmask, SIG_BLOCK, 0, &g.saved_mask, 8);
      uint64_t unblock = 1ULL << (kDumpSignal - 1);
      call(SYS_rt_sigprocmask, SIG_UNBLOCK, &unblock, 0, 8);

      g_mailbox.restored = 0;
      // The signal is delivered on the way out of this system call; a
      // restored process resumes right here.
      call(SYS_tgkill, call(SYS_getpid), call(SYS_gettid), kDumpSignal);

      call(SYS_rt_sigaction, kDumpSignal, &g.saved_action, 0, 8);
      call(SYS_rt_sigprocmask, SIG_SETMASK, &g.saved_mask, 0, 8);
      if (g_mailbox.restored == 1) {
        // The restorer's own code and stack are still mapped: gone now.
        if (g_mailbox.unmap_length != 0) call(SYS_munmap, g_mailbox.unmap_start, g_mailbox.unmap_length);
        return 1;
      }
      call(SYS_munmap, scratch, kScratchSize);
      g.scratch = nullptr;
      result = g.failed ? -1 : 0;
    }
  }
  if (error != nullptr && error_len > 0) {
    Line(error, error_len).add(g.failed ? g.error : "");
  }
  return result;
}

// In a restored process: when the restorer started and when it handed over
// (CLOCK_MONOTONIC ns), for the agent's start-up trace. Returns 0, or -1 in a
// process that was not restored.
__attribute__((visibility("default"))) int stoke_restore_times(uint64_t* started_ns, uint64_t* finished_ns) {
  if (g_mailbox.restored != 1) return -1;
  *started_ns = g_mailbox.started_ns;
  *finished_ns = g_mailbox.finished_ns;
  return 0;
}

}  // extern "C"
