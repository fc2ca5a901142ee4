// The fixed-layout part of a checkpoint image: what the in-sandbox writer
// (runtimes/checkpoint), the freestanding restorer (runtimes/restorer) and the
// C++ image library (sandbox/image) all read and write.
//
// Why a fixed layout beside the protobuf manifest: the writer runs inside a
// signal handler of the process being dumped and the restorer runs without
// libc, so neither can use protobuf. They share these plain structs instead;
// the manifest (image.proto) is the self-describing view for the agent and
// for people, derived from this table when the image is finalized.
//
// File layout (all integers little-endian, x86_64):
//
//   0                FileHeader (128 bytes)
//   manifest_offset  protobuf stoke.image.v1.Manifest   (empty in a raw dump)
//   table_offset     RestoreTable: TableHeader, VmaRecord[], strings
//   data_offset      page-aligned data area: each dumped VMA's bytes at
//                    data_offset + VmaRecord::data_offset, zero pages as holes
//   data_offset + data_length == file size, exactly
//
// A raw dump (magic "STKDUMP1", written by libstoke_checkpoint.so) and a final
// image (magic "STKIMAG1", written by finalize_image) share this layout.
//
// Everything here must compile freestanding (no libc, no libstdc++).
#pragma once

#include <stdint.h>

namespace stoke::image {

inline constexpr char kDumpMagic[8] = {'S', 'T', 'K', 'D', 'U', 'M', 'P', '1'};
inline constexpr char kImageMagic[8] = {'S', 'T', 'K', 'I', 'M', 'A', 'G', '1'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint32_t kTableMagic = 0x54525453;  // "STRT"

// The restorer reads the table into a static buffer of this size.
inline constexpr uint64_t kMaxTableBytes = 2u << 20;
inline constexpr uint64_t kMaxManifestBytes = 1u << 20;
inline constexpr uint32_t kMaxVmas = 16384;
inline constexpr uint32_t kMaxAuxvWords = 128;  // (type, value) pairs, AT_NULL included

// The restorer is linked here (16 TiB); no image may use this range.
inline constexpr uint64_t kRestorerBase = 0x100000000000ULL;
inline constexpr uint64_t kRestorerLimit = 0x100040000000ULL;  // + 1 GiB reserved
// Highest user address on x86_64 with 4-level page tables.
inline constexpr uint64_t kUserAddressLimit = 0x7ffffffff000ULL;

struct FileHeader {
  char magic[8];
  uint32_t version;       // kFormatVersion
  uint32_t header_size;   // sizeof(FileHeader)
  uint64_t manifest_offset;
  uint64_t manifest_length;
  uint64_t table_offset;
  uint64_t table_length;
  uint64_t data_offset;   // multiple of kPageSize
  uint64_t data_length;   // multiple of kPageSize
  uint64_t meta_hash;     // hash64 of the manifest bytes followed by the table bytes
  uint64_t reserved[6];
  uint64_t header_hash;   // hash64 of every byte before this field
};
static_assert(sizeof(FileHeader) == 128);

enum VmaKind : uint32_t {
  kVmaAnonEmpty = 1,  // anonymous, nothing dumped: mapped fresh (zero)
  kVmaAnonData = 2,   // anonymous (heap, arenas, bss): mapped from the image's data
  kVmaFile = 3,       // file mapping never written: mapped from the original file
  kVmaFileData = 4,   // private file mapping with written pages (RELRO, .data): from the image
  kVmaStack = 5,      // the main stack: anonymous MAP_GROWSDOWN, contents copied
  kVmaVvar = 6,       // [vvar], [vvar_vclock], [vdso]: moved, never mapped
  kVmaVvarVclock = 7,
  kVmaVdso = 8,
};

inline constexpr uint64_t kNoData = ~0ULL;

// VmaRecord::flags. kVmaShared: a read-only MAP_SHARED file mapping (glibc maps
// gconv-modules.cache so), mapped MAP_SHARED again from the original file.
inline constexpr uint32_t kVmaShared = 1;

struct VmaRecord {
  uint64_t start;
  uint64_t end;
  uint64_t file_offset;   // offset into the original file (kVmaFile, kVmaFileData)
  uint64_t data_offset;   // relative to the data area, or kNoData
  uint64_t copy_from;     // kVmaStack: offset of the first non-zero page in the VMA
  // Identity of the original file (kVmaFile, kVmaFileData), from stat(2).
  uint64_t dev;
  uint64_t ino;
  uint64_t size;
  int64_t mtime_sec;
  int64_t mtime_nsec;
  uint32_t path;          // offset into the strings, 0 = no path
  uint32_t prot;          // PROT_* bits
  uint32_t kind;          // VmaKind
  uint32_t flags;         // kVmaShared
};
static_assert(sizeof(VmaRecord) == 96);

// The kernel's struct sigaction on x86_64 (not glibc's).
struct KernelSigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
};

// The mm fields PR_SET_MM_MAP takes (and /proc/PID/stat shows).
struct MmFields {
  uint64_t start_code, end_code, start_data, end_data;
  uint64_t start_brk, brk, start_stack;
  uint64_t arg_start, arg_end, env_start, env_end;
};

// What the CPU offers, as far as restored code can observe it: glibc picks
// its string functions from these bits at start-up, and the XSAVE area in the
// saved signal frame has the layout xcr0 implies.
struct CpuIdentity {
  uint32_t vendor[3];        // cpuid 0: ebx, edx, ecx
  uint32_t signature;        // cpuid 1: eax (family, model, stepping)
  uint32_t leaf1_ecx;        // cpuid 1 features (OSXSAVE included)
  uint32_t leaf1_edx;
  uint32_t leaf7_ebx;        // cpuid 7.0 structured extended features
  uint32_t leaf7_ecx;
  uint32_t leaf7_edx;
  uint32_t leaf7_1_eax;
  uint32_t ext1_ecx;         // cpuid 0x80000001
  uint32_t ext1_edx;
  uint32_t xsave_size;       // cpuid 0xd.0 ebx: XSAVE area size for xcr0
  uint32_t xsave_features;   // cpuid 0xd.1 eax: XSAVEOPT/XSAVEC/XGETBV1/XSAVES
  uint64_t xcr0;             // xgetbv(0), 0 without OSXSAVE
};
static_assert(sizeof(CpuIdentity) == 64);

// Memory of the dumped process that the restorer fills in just before it
// jumps back: the writer reads it to know it was restored and what to unmap.
struct RestoreMailbox {
  uint64_t magic;            // kMailboxMagic
  uint64_t restored;         // 1 once written by the restorer
  uint64_t unmap_start;      // the restorer's own mappings, to be unmapped
  uint64_t unmap_length;
  uint64_t image_fd;         // the fd the image came in on (already closed)
  uint64_t started_ns;       // CLOCK_MONOTONIC when the restorer started
  uint64_t finished_ns;      // CLOCK_MONOTONIC just before rt_sigreturn
  uint64_t reserved;
};
inline constexpr uint64_t kMailboxMagic = 0x786f626c69616d53ULL;  // "Smailbox"

struct TableHeader {
  uint32_t magic;            // kTableMagic
  uint32_t version;          // kFormatVersion
  uint32_t table_length;     // bytes, header + VMAs + strings
  uint32_t vma_count;
  uint32_t vma_offset;       // from the start of the table
  uint32_t strings_offset;   // from the start of the table; byte 0 is NUL
  uint32_t strings_length;
  uint32_t auxv_words;       // used entries of auxv (pairs * 2, AT_NULL pair included)
  // The CPU context: the address of the ucontext of the signal frame the
  // writer's handler ran on (rt_sigreturn with rsp = this address).
  uint64_t sigframe;
  uint64_t fs_base;
  uint64_t rseq_addr;        // 0 = not registered
  uint32_t rseq_len;
  uint32_t rseq_sig;
  uint64_t tid_addr;         // glibc's cached tid (clear_child_tid), 0 = none
  uint64_t mailbox;          // address of the writer's RestoreMailbox
  uint32_t umask;
  int32_t pid;               // pid and tid of the dumped process, in its pid ns
  int32_t tid;
  uint32_t cwd;              // strings offset
  char comm[16];
  MmFields mm;
  uint64_t auxv[kMaxAuxvWords];
  KernelSigaction sigactions[64];  // index signal - 1
  // What the image depends on.
  char kernel_release[72];   // uname -r
  char kernel_version[72];   // uname -v
  uint64_t vdso_hash;        // hash64 of the [vdso] bytes
  uint64_t vvar_size;
  uint64_t vvar_vclock_size;
  uint64_t vdso_size;
  CpuIdentity cpu;
  uint64_t dumped_bytes;     // non-zero bytes written to the data area
  uint64_t reserved[8];
};

// A small, fast, non-cryptographic 64-bit hash for integrity checks the
// freestanding restorer can afford (the sha256 content address is the
// agent's). Word at a time, multiply-xorshift mixing.
inline uint64_t hash64(const void* data, uint64_t length, uint64_t seed = 0x5354524b) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed ^ (length * 0x9e3779b97f4a7c15ULL);
  auto mix = [](uint64_t x) {
    x ^= x >> 31;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 29;
    return x;
  };
  uint64_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t w;
    __builtin_memcpy(&w, p + i, 8);
    h = mix(h ^ w) * 0x9fb21c651e98df25ULL;
  }
  uint64_t tail = 0;
  for (uint64_t k = 0; i + k < length; ++k) tail |= static_cast<uint64_t>(p[i + k]) << (8 * k);
  h = mix(h ^ tail ^ 0x80);
  return mix(h);
}

// Continue a hash over a second buffer (manifest then table).
inline uint64_t hash64_2(const void* a, uint64_t alen, const void* b, uint64_t blen) {
  return hash64(b, blen, hash64(a, alen));
}

#if defined(__x86_64__)
inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t* a, uint32_t* b, uint32_t* c, uint32_t* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

inline void read_cpu_identity(CpuIdentity* id) {
  uint32_t a, b, c, d;
  cpuid(0, 0, &a, &b, &c, &d);
  const uint32_t max_leaf = a;
  id->vendor[0] = b;
  id->vendor[1] = d;
  id->vendor[2] = c;
  cpuid(1, 0, &a, &b, &c, &d);
  id->signature = a;
  id->leaf1_ecx = c;
  id->leaf1_edx = d;
  id->leaf7_ebx = id->leaf7_ecx = id->leaf7_edx = id->leaf7_1_eax = 0;
  if (max_leaf >= 7) {
    cpuid(7, 0, &a, &b, &c, &d);
    id->leaf7_ebx = b;
    id->leaf7_ecx = c;
    id->leaf7_edx = d;
    if (a >= 1) {
      cpuid(7, 1, &a, &b, &c, &d);
      id->leaf7_1_eax = a;
    }
  }
  id->xsave_size = id->xsave_features = 0;
  if (max_leaf >= 0xd) {
    cpuid(0xd, 0, &a, &b, &c, &d);
    id->xsave_size = b;
    cpuid(0xd, 1, &a, &b, &c, &d);
    id->xsave_features = a;
  }
  cpuid(0x80000000, 0, &a, &b, &c, &d);
  id->ext1_ecx = id->ext1_edx = 0;
  if (a >= 0x80000001) {
    cpuid(0x80000001, 0, &a, &b, &c, &d);
    id->ext1_ecx = c;
    id->ext1_edx = d;
  }
  id->xcr0 = 0;
  if (id->leaf1_ecx & (1u << 27)) {  // OSXSAVE: xgetbv is available
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    id->xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  }
}
#endif

inline bool same_cpu(const CpuIdentity& a, const CpuIdentity& b) {
  return __builtin_memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace stoke::image
