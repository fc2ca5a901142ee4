// libFuzzer target for code uploads: CodeStore::store extracts a client's
// ZIP or TAR as root, so it must refuse every escape (absolute paths, '..',
// symlinks out of the tree, links, devices) and every bomb (size, entries)
// with an error, and never write outside its own temp dir.
//
// Input: byte 0 picks the format (ZIP or TAR); the rest is the archive.
//
// Checked, beyond "no crash, no sanitizer report": after every input the
// store's root holds only complete <sha256> trees (no temp dir is left), and
// nothing appeared outside the root (a sibling "outside" dir stays empty);
// a stored tree stays within the size limit.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "agent/code_store.h"

#define FUZZ_CHECK(condition) \
  do {                        \
    if (!(condition)) __builtin_trap(); \
  } while (0)

namespace fs = std::filesystem;

namespace {

struct Place {
  std::string base, root, outside;
  Place() {
    // TMPDIR: the long run extracts to a tmpfs (/dev/shm) at several times the speed of a disk.
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/stoke-archive-fuzz-XXXXXX";
    base = mkdtemp(tmpl.data());
    root = base + "/code";
    outside = base + "/outside";
    fs::create_directories(outside);
  }
  ~Place() { fs::remove_all(base); }
};

uint64_t tree_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir))  // does not follow symlinks
    if (e.symlink_status().type() == fs::file_type::regular) n += e.file_size();
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Place place;
  if (size < 1) return 0;
  stoke::agent::CodeLimits limits;
  limits.max_total_bytes = 1 << 20;
  limits.max_entries = 256;
  auto store = stoke::agent::CodeStore::open(place.root, limits);
  FUZZ_CHECK(store.ok());

  stoke::v1::FunctionConfig config;
  config.set_code_format(data[0] & 1 ? stoke::v1::ZIP : stoke::v1::TAR);
  config.set_code(std::string(reinterpret_cast<const char*>(data + 1), size - 1));
  auto stored = store.value().store(config);
  if (stored.ok()) {
    FUZZ_CHECK(fs::is_directory(stored.value().dir));
    FUZZ_CHECK(stored.value().size <= limits.max_total_bytes);
    FUZZ_CHECK(tree_bytes(stored.value().dir) <= limits.max_total_bytes);
  }
  // Only complete trees remain; nothing escaped the root.
  for (auto& e : fs::directory_iterator(place.root)) {
    std::string name = e.path().filename();
    FUZZ_CHECK(name.size() == 64);
  }
  FUZZ_CHECK(fs::is_empty(place.outside));
  auto removed = store.value().remove_unreferenced({});
  FUZZ_CHECK(removed.ok());
  return 0;
}
