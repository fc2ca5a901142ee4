// Structural validation of a restore table, shared by the restorer (which
// must not trust the bytes it is about to map) and the C++ image library.
// Freestanding; errors are static strings.
#pragma once

#include <stdint.h>

#include "sandbox/image/restore_abi.h"
#include "sandbox/image/restore_table.h"

namespace stoke::image {

struct TableProblem {
  int exit_code;        // 0 = fine, else a RestoreExit
  const char* message;  // static
  uint32_t vma;         // index of the offending VMA, or ~0u
};

inline bool nul_terminated(const char* s, uint64_t cap) {
  for (uint64_t i = 0; i < cap; ++i)
    if (s[i] == '\0') return true;
  return false;
}

// table: table_length bytes, 8-byte aligned. data_length: size of the image's
// data area.
inline TableProblem check_table(const void* table, uint64_t table_length, uint64_t data_length) {
  constexpr uint32_t kNone = ~0u;
  auto bad = [](const char* m, uint32_t vma = ~0u) { return TableProblem{kRestoreExitImageCorrupt, m, vma}; };
  if (table_length < sizeof(TableHeader)) return bad("restore table shorter than its header");
  const auto* th = static_cast<const TableHeader*>(table);
  if (th->magic != kTableMagic) return bad("restore table has a bad magic number");
  if (th->version != kFormatVersion) return bad("restore table has an unsupported version");
  if (th->table_length != table_length) return bad("restore table length disagrees with the file header");
  if (th->vma_count == 0 || th->vma_count > kMaxVmas) return bad("restore table has an invalid VMA count");
  if (th->vma_offset < sizeof(TableHeader) || th->vma_offset % 8 != 0) return bad("restore table VMA offset invalid");
  const uint64_t vma_end = uint64_t{th->vma_offset} + uint64_t{th->vma_count} * sizeof(VmaRecord);
  if (vma_end > th->strings_offset) return bad("restore table VMAs overlap the strings");
  if (uint64_t{th->strings_offset} + th->strings_length > table_length || th->strings_length == 0)
    return bad("restore table strings out of bounds");
  const char* strings = static_cast<const char*>(table) + th->strings_offset;
  if (strings[0] != '\0' || strings[th->strings_length - 1] != '\0')
    return bad("restore table strings are not NUL-terminated");
  if (th->cwd >= th->strings_length) return bad("restore table cwd out of bounds");
  if (th->auxv_words > kMaxAuxvWords || th->auxv_words % 2 != 0) return bad("restore table auxv invalid");
  if (!nul_terminated(th->kernel_release, sizeof th->kernel_release) ||
      !nul_terminated(th->kernel_version, sizeof th->kernel_version) || !nul_terminated(th->comm, sizeof th->comm))
    return bad("restore table strings in the header are not terminated");
  if (data_length % kPageSize != 0) return bad("image data area is not a whole number of pages");

  const auto* vmas = reinterpret_cast<const VmaRecord*>(static_cast<const char*>(table) + th->vma_offset);
  uint64_t prev_end = 0;
  int stacks = 0, vdsos = 0, vvars = 0;
  bool frame_ok = false, mailbox_ok = th->mailbox == 0;
  for (uint32_t i = 0; i < th->vma_count; ++i) {
    const VmaRecord& v = vmas[i];
    if (v.start >= v.end || v.start % kPageSize != 0 || v.end % kPageSize != 0 || v.end > kUserAddressLimit)
      return bad("VMA has invalid bounds", i);
    if (v.start < prev_end) return bad("VMAs are not sorted or overlap", i);
    prev_end = v.end;
    if (v.start < kRestorerLimit && kRestorerBase < v.end)
      return TableProblem{kRestoreExitAddressConflict, "the image uses the restorer's address range", i};
    if (v.kind < kVmaAnonEmpty || v.kind > kVmaVdso) return bad("VMA has an unknown kind", i);
    if ((v.prot & ~7u) != 0) return bad("VMA has invalid protection bits", i);
    if ((v.flags & ~kVmaShared) != 0) return bad("VMA has unknown flags", i);
    if ((v.flags & kVmaShared) != 0 && (v.kind != kVmaFile || (v.prot & 2) != 0))
      return bad("only read-only file mappings may be shared", i);
    const bool has_data = v.kind == kVmaAnonData || v.kind == kVmaFileData || v.kind == kVmaStack;
    const uint64_t len = v.end - v.start;
    if (has_data) {
      if (v.data_offset == kNoData || v.data_offset % kPageSize != 0 || v.data_offset > data_length ||
          len > data_length - v.data_offset)
        return bad("VMA data lies outside the image's data area", i);
    } else if (v.data_offset != kNoData) {
      return bad("VMA without data has a data offset", i);
    }
    if (v.kind == kVmaFile || v.kind == kVmaFileData) {
      if (v.path == 0 || v.path >= th->strings_length) return bad("file VMA has no valid path", i);
      if (v.file_offset % kPageSize != 0) return bad("file VMA offset is not page aligned", i);
    }
    if (v.kind == kVmaStack) {
      ++stacks;
      if (v.copy_from % kPageSize != 0 || v.copy_from >= len) return bad("stack copy range invalid", i);
      if (th->sigframe >= v.start + v.copy_from + 8 && th->sigframe < v.end) frame_ok = true;
    }
    if (v.kind == kVmaVdso) {
      ++vdsos;
      if (len != th->vdso_size) return bad("vdso size disagrees with the header", i);
    }
    if (v.kind == kVmaVvar) ++vvars;
    if (th->mailbox >= v.start && th->mailbox + sizeof(RestoreMailbox) <= v.end && (v.prot & 2) != 0 &&
        has_data)
      mailbox_ok = true;
  }
  if (stacks != 1) return bad("image must have exactly one stack");
  if (vdsos != 1 || vvars != 1) return bad("image must have exactly one [vvar] and one [vdso]");
  if (!frame_ok) return bad("the saved signal frame is not on the saved stack");
  if (!mailbox_ok) return bad("the restore mailbox is not in writable dumped memory");
  return TableProblem{0, nullptr, kNone};
}

inline bool check_file_header(const FileHeader& h, const char magic[8], uint64_t file_size, const char** why) {
  for (int i = 0; i < 8; ++i)
    if (h.magic[i] != magic[i]) {
      *why = "not a stoke image (bad magic)";
      return false;
    }
  if (h.version != kFormatVersion) {
    *why = "unsupported image format version";
    return false;
  }
  if (h.header_size != sizeof(FileHeader) || h.header_hash != hash64(&h, __builtin_offsetof(FileHeader, header_hash))) {
    *why = "image header is corrupt (hash mismatch)";
    return false;
  }
  if (h.manifest_length > kMaxManifestBytes || h.table_length > kMaxTableBytes || h.table_length % 8 != 0 ||
      h.manifest_offset < sizeof(FileHeader) || h.table_offset < h.manifest_offset + h.manifest_length ||
      h.data_offset < h.table_offset + h.table_length || h.data_offset % kPageSize != 0 ||
      h.data_length % kPageSize != 0) {
    *why = "image header has inconsistent offsets";
    return false;
  }
  if (h.data_offset > file_size || h.data_length != file_size - h.data_offset) {
    *why = "image is truncated or has trailing bytes (file size disagrees with the header)";
    return false;
  }
  return true;
}

}  // namespace stoke::image
