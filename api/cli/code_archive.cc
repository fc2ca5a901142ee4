#include "api/cli/code_archive.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "sandbox/base/file_util.h"

namespace stoke::cli {
namespace {

// The few libarchive entry points a tar writer needs (ABI of libarchive 3).
struct LibArchive {
  void* handle = nullptr;
  void* (*write_new)();
  int (*set_format_pax_restricted)(void*);
  int (*open_memory)(void*, void*, size_t, size_t*);
  int (*write_header)(void*, void*);
  ssize_t (*write_data)(void*, const void*, size_t);
  int (*write_close)(void*);
  int (*write_free)(void*);
  const char* (*error_string)(void*);
  void* (*entry_new)();
  void (*entry_free)(void*);
  void (*entry_set_pathname)(void*, const char*);
  void (*entry_set_size)(void*, int64_t);
  void (*entry_set_filetype)(void*, unsigned int);
  void (*entry_set_perm)(void*, unsigned int);
  void (*entry_set_symlink)(void*, const char*);
};

Result<LibArchive> load_libarchive() {
  LibArchive a;
  a.handle = dlopen("libarchive.so.13", RTLD_NOW | RTLD_LOCAL);
  if (a.handle == nullptr) return plain_error("load libarchive", std::string(dlerror()) + " (install libarchive13)");
  bool ok = true;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(a.handle, name));
    ok = ok && fn != nullptr;
  };
  sym(a.write_new, "archive_write_new");
  sym(a.set_format_pax_restricted, "archive_write_set_format_pax_restricted");
  sym(a.open_memory, "archive_write_open_memory");
  sym(a.write_header, "archive_write_header");
  sym(a.write_data, "archive_write_data");
  sym(a.write_close, "archive_write_close");
  sym(a.write_free, "archive_write_free");
  sym(a.error_string, "archive_error_string");
  sym(a.entry_new, "archive_entry_new");
  sym(a.entry_free, "archive_entry_free");
  sym(a.entry_set_pathname, "archive_entry_set_pathname");
  sym(a.entry_set_size, "archive_entry_set_size");
  sym(a.entry_set_filetype, "archive_entry_set_filetype");
  sym(a.entry_set_perm, "archive_entry_set_perm");
  sym(a.entry_set_symlink, "archive_entry_set_symlink");
  if (!ok) return plain_error("load libarchive", "a symbol is missing");
  return a;
}

constexpr unsigned kAeIfReg = 0100000, kAeIfDir = 0040000, kAeIfLnk = 0120000;

Result<std::string> pack_directory(const std::string& dir, size_t max_bytes) {
  auto lib = load_libarchive();
  if (!lib.ok()) return lib.error();
  LibArchive& L = lib.value();
  // Entries in a stable order, so the same tree packs to the same bytes (and
  // so to the same content address in the agent).
  std::vector<std::filesystem::path> paths;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec))
    paths.push_back(it->path());
  if (ec) return plain_error("read " + dir, ec.message());
  std::sort(paths.begin(), paths.end());

  std::string out(max_bytes + 1, '\0');
  size_t used = 0;
  void* w = L.write_new();
  L.set_format_pax_restricted(w);
  if (L.open_memory(w, out.data(), out.size(), &used) != 0) {
    L.write_free(w);
    return plain_error("pack " + dir, "cannot open the archive buffer");
  }
  Status status;
  for (const auto& p : paths) {
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) {
      status = sys_error("stat " + p.string());
      break;
    }
    std::string rel = std::filesystem::relative(p, dir).string();
    void* e = L.entry_new();
    L.entry_set_pathname(e, rel.c_str());
    L.entry_set_perm(e, st.st_mode & 0777);
    std::string content;
    if (S_ISDIR(st.st_mode)) {
      L.entry_set_filetype(e, kAeIfDir);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target = std::filesystem::read_symlink(p, ec).string();
      L.entry_set_filetype(e, kAeIfLnk);
      L.entry_set_symlink(e, target.c_str());
    } else if (S_ISREG(st.st_mode)) {
      auto data = read_file(p.string());
      if (!data.ok()) {
        L.entry_free(e);
        status = data.error();
        break;
      }
      content = std::move(data.value());
      L.entry_set_filetype(e, kAeIfReg);
      L.entry_set_size(e, static_cast<int64_t>(content.size()));
    } else {
      L.entry_free(e);
      status = plain_error("pack " + dir, rel + " is not a file, directory or symlink");
      break;
    }
    bool ok = L.write_header(w, e) == 0 &&
              (content.empty() || L.write_data(w, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    L.entry_free(e);
    if (!ok) {
      const char* why = L.error_string(w);
      status = plain_error("pack " + dir, std::string(why ? why : "write failed") +
                                               " (the code may be larger than " + std::to_string(max_bytes) + " bytes)");
      break;
    }
  }
  if (status.ok() && L.write_close(w) != 0) status = plain_error("pack " + dir, "the code is too large");
  L.write_free(w);
  if (!status.ok()) return status.error();
  if (used > max_bytes) return plain_error("pack " + dir, "the packed code is larger than " + std::to_string(max_bytes) + " bytes");
  out.resize(used);
  return out;
}

}  // namespace

Status load_code(const std::string& path, size_t max_bytes, v1::FunctionConfig& config) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return sys_error("--code " + path);
  if (S_ISDIR(st.st_mode)) {
    auto tar = pack_directory(path, max_bytes);
    if (!tar.ok()) return tar.error();
    config.set_code(std::move(tar.value()));
    config.set_code_format(v1::TAR);
    return {};
  }
  if (!S_ISREG(st.st_mode)) return plain_error("--code " + path, "must be a file, a directory or a .zip");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return plain_error("--code " + path, "is larger than " + std::to_string(max_bytes) + " bytes");
  auto data = read_file(path);
  if (!data.ok()) return data.error();
  bool zip = path.size() > 4 && path.compare(path.size() - 4, 4, ".zip") == 0;
  config.set_code(std::move(data.value()));
  if (zip) {
    config.set_code_format(v1::ZIP);
  } else {
    config.set_code_format(v1::SINGLE_FILE);
    config.set_code_file_name(std::filesystem::path(path).filename().string());
  }
  return {};
}

}  // namespace stoke::cli
