// libFuzzer target for checkpoint images as the agent and the restorer read
// them: the file header check, the manifest and the restore table's bounds
// (load_image runs all of them), and check_table alone on raw bytes, which is
// what the freestanding restorer relies on before it maps anything.
//
// Input: byte 0 selects the mode (even: a whole image file; odd: a bare
// restore table whose data area length comes from the next 4 bytes).
//
// Checked, beyond "no crash, no sanitizer report": an image that loads has a
// table that check_table accepts, and a table check either passes or names
// its problem.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "sandbox/image/image.h"
#include "sandbox/image/table_check.h"

#define FUZZ_CHECK(condition) \
  do {                        \
    if (!(condition)) __builtin_trap(); \
  } while (0)

namespace {

int memfd() {
  static int fd = memfd_create("image-fuzz", MFD_CLOEXEC);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool bare_table = data[0] & 1;
  data += 1;
  size -= 1;
  if (bare_table) {
    if (size < 4) return 0;
    uint32_t pages;
    std::memcpy(&pages, data, 4);
    // The table is read as 8-byte-aligned records, as it is in the image.
    std::string table(reinterpret_cast<const char*>(data + 4), size - 4);
    table.resize((table.size() + 7) / 8 * 8, '\0');
    auto p = stoke::image::check_table(table.data(), table.size(), uint64_t{pages % 4096} * stoke::image::kPageSize);
    FUZZ_CHECK(p.exit_code == 0 || p.message != nullptr);
    return 0;
  }
  int fd = memfd();
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  FUZZ_CHECK(pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
  auto loaded = stoke::image::load_image("/proc/self/fd/" + std::to_string(fd));
  if (!loaded.ok()) {
    FUZZ_CHECK(!loaded.error().message().empty());
    return 0;
  }
  const auto& img = loaded.value();
  auto p = stoke::image::check_table(img.table.data(), img.table.size(), img.header.data_length);
  FUZZ_CHECK(p.exit_code == 0);
  return 0;
}
