// Reading and validating images; the manifest as JSON.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <google/protobuf/util/json_util.h>

#include "sandbox/base/unique_fd.h"
#include "sandbox/image/image.h"
#include "sandbox/image/table_check.h"

namespace stoke::image {
namespace {

bool pread_exact(int fd, void* dst, size_t len, uint64_t off) {
  char* p = static_cast<char*>(dst);
  while (len > 0) {
    ssize_t r = ::pread(fd, p, len, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    len -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

}  // namespace

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

Result<LoadedImage> load_image(const std::string& path) {
  const std::string step = "image " + path;
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + step);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return sys_error("fstat " + step);
  if (!S_ISREG(st.st_mode)) return plain_error(step, "not a regular file");
  LoadedImage img;
  if (static_cast<uint64_t>(st.st_size) < sizeof(FileHeader))
    return plain_error(step, "image is truncated (" + std::to_string(st.st_size) + " bytes, shorter than its header)");
  if (!pread_exact(fd.get(), &img.header, sizeof img.header, 0)) return sys_error("read " + step);
  const char* why = nullptr;
  if (!check_file_header(img.header, kImageMagic, static_cast<uint64_t>(st.st_size), &why)) {
    std::string detail = why;
    if (img.header.data_offset + img.header.data_length != static_cast<uint64_t>(st.st_size) &&
        detail.find("truncated") != std::string::npos)
      detail += ": file has " + std::to_string(st.st_size) + " bytes, header says " +
                std::to_string(img.header.data_offset + img.header.data_length);
    return plain_error(step, detail);
  }
  std::string manifest_bytes(img.header.manifest_length, '\0');
  img.table.assign(img.header.table_length, '\0');
  if (!pread_exact(fd.get(), manifest_bytes.data(), manifest_bytes.size(), img.header.manifest_offset) ||
      !pread_exact(fd.get(), img.table.data(), img.table.size(), img.header.table_offset))
    return sys_error("read " + step);
  if (hash64_2(manifest_bytes.data(), manifest_bytes.size(), img.table.data(), img.table.size()) !=
      img.header.meta_hash)
    return plain_error(step, "the manifest or restore table is corrupt (hash mismatch)");
  if (!img.manifest.ParseFromString(manifest_bytes)) return plain_error(step, "the manifest does not parse");
  if (img.manifest.format_version() != kFormatVersion)
    return plain_error(step, "manifest format version " + std::to_string(img.manifest.format_version()) +
                                 " is not supported (expected " + std::to_string(kFormatVersion) + ")");
  TableProblem p = check_table(img.table.data(), img.table.size(), img.header.data_length);
  if (p.exit_code != 0)
    return plain_error(step, std::string(p.message) + (p.vma != ~0u ? " (VMA " + std::to_string(p.vma) + ")" : ""));
  if (img.manifest.table_hash() != hex64(hash64(img.table.data(), img.table.size())))
    return plain_error(step, "the manifest does not describe this restore table (table_hash differs)");
  return img;
}

Result<Manifest> read_image(const std::string& path) {
  auto img = load_image(path);
  if (!img.ok()) return img.error();
  return std::move(img.value().manifest);
}

std::string manifest_json(const Manifest& manifest) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(manifest, &out, options);
  if (!status.ok()) return "{\"error\": \"manifest cannot be printed\"}\n";
  return out;
}

}  // namespace stoke::image
