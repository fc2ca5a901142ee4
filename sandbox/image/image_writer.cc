// Raw dump -> final image: validated, described by a manifest, content
// addressed, written once (temporary file, fsync, rename) and never modified.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <openssl/evp.h>

#include "sandbox/base/file_util.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/image/image.h"
#include "sandbox/image/table_check.h"

namespace stoke::image {
namespace {

struct DigestDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { ok_ = ctx_ && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1; }
  void update(const void* p, size_t n) { ok_ = ok_ && EVP_DigestUpdate(ctx_.get(), p, n) == 1; }
  Result<std::string> hex() {
    unsigned char md[32];
    unsigned int len = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1 || len != 32)
      return plain_error("sha256", "OpenSSL digest failed");
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : md) {
      out += digits[c >> 4];
      out += digits[c & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, DigestDeleter> ctx_;
  bool ok_ = false;
};

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

bool pwrite_exact(int fd, const void* src, size_t len, uint64_t off) {
  const char* p = static_cast<const char*>(src);
  while (len > 0) {
    ssize_t r = ::pwrite(fd, p, len, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    len -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

bool all_zero(const char* p, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  return true;
}

std::string fixed_string(const char* s, size_t cap) { return std::string(s, strnlen(s, cap)); }

// The manifest is a view of the table plus the caller's labels.
Manifest manifest_from_table(const std::string& table, uint64_t data_length, const ImageLabels& labels) {
  const auto& th = *reinterpret_cast<const TableHeader*>(table.data());
  const auto* vmas = reinterpret_cast<const VmaRecord*>(table.data() + th.vma_offset);
  const char* strings = table.data() + th.strings_offset;
  Manifest m;
  m.set_format_version(kFormatVersion);
  m.mutable_labels()->set_function_id(labels.function_id);
  m.mutable_labels()->set_function_version(labels.function_version);
  for (const auto& [k, v] : labels.extra) (*m.mutable_labels()->mutable_extra())[k] = v;
  m.set_created_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
  auto* k = m.mutable_kernel();
  k->set_release(fixed_string(th.kernel_release, sizeof th.kernel_release));
  k->set_version(fixed_string(th.kernel_version, sizeof th.kernel_version));
  k->set_vdso_hash(hex64(th.vdso_hash));
  k->set_vdso_size(th.vdso_size);
  k->set_vvar_size(th.vvar_size);
  k->set_vvar_vclock_size(th.vvar_vclock_size);
  auto* cpu = m.mutable_cpu();
  cpu->set_vendor(std::string(reinterpret_cast<const char*>(th.cpu.vendor), 12));
  cpu->set_signature(th.cpu.signature);
  cpu->set_xcr0(th.cpu.xcr0);
  cpu->set_xsave_size(th.cpu.xsave_size);
  const auto* words = reinterpret_cast<const uint32_t*>(&th.cpu);
  for (int i = 0; i < 16; ++i) cpu->add_words(words[i]);
  cpu->set_features_hash(hex64(hash64(&th.cpu, sizeof th.cpu)));
  std::map<std::string, v1::MappedFile*> by_path;
  for (uint32_t i = 0; i < th.vma_count; ++i) {
    const VmaRecord& v = vmas[i];
    if (v.kind != kVmaFile && v.kind != kVmaFileData) continue;
    std::string path = strings + v.path;
    auto [it, fresh] = by_path.emplace(path, nullptr);
    if (fresh) {
      it->second = m.add_files();
      it->second->set_path(path);
      it->second->set_dev(v.dev);
      it->second->set_ino(v.ino);
      it->second->set_size(v.size);
      it->second->set_mtime_sec(v.mtime_sec);
      it->second->set_mtime_nsec(v.mtime_nsec);
      it->second->set_role(v1::MappedFile::DATA);
    }
    v1::MappedFile* f = it->second;
    if (v.kind == kVmaFileData) f->set_written_pages_in_image(true);
    if (th.mm.start_code >= v.start && th.mm.start_code < v.end) f->set_role(v1::MappedFile::EXECUTABLE);
    else if ((v.prot & 4) != 0 && f->role() == v1::MappedFile::DATA) f->set_role(v1::MappedFile::LIBRARY);
  }
  auto* p = m.mutable_process();
  p->set_pid(th.pid);
  p->set_tid(th.tid);
  p->set_comm(fixed_string(th.comm, sizeof th.comm));
  p->set_cwd(strings + th.cwd);
  p->set_umask(th.umask);
  auto* layout = m.mutable_layout();
  layout->set_vma_count(th.vma_count);
  layout->set_data_bytes(data_length);
  layout->set_dumped_bytes(th.dumped_bytes);
  return m;
}

std::atomic<uint64_t> g_tmp_counter{0};

}  // namespace

Result<std::string> sha256_file(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read " + path);
    if (n == 0) break;
    sha.update(buf.data(), static_cast<size_t>(n));
  }
  return sha.hex();
}

Result<ImageInfo> write_image(const std::string& images_dir, Manifest manifest, const std::string& table, int data_fd,
                              uint64_t data_offset, uint64_t data_length) {
  const std::string step = "write image to " + images_dir;
  if (data_length % kPageSize != 0) return plain_error(step, "data length is not a whole number of pages");
  TableProblem p = check_table(table.data(), table.size(), data_length);
  if (p.exit_code != 0) return plain_error(step, std::string("invalid restore table: ") + p.message);
  manifest.set_table_hash(hex64(hash64(table.data(), table.size())));
  const uint64_t manifest_offset = sizeof(FileHeader);
  std::string manifest_bytes;
  // Deterministic bytes: the same dump and labels give the same image (and name).
  {
    google::protobuf::io::StringOutputStream raw(&manifest_bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    if (!manifest.SerializeToCodedStream(&out)) return plain_error(step, "manifest does not serialize");
  }
  if (manifest_bytes.size() > kMaxManifestBytes) return plain_error(step, "manifest larger than 1 MiB");
  manifest.mutable_layout()->set_header_bytes(0);
  const uint64_t table_offset = (manifest_offset + manifest_bytes.size() + 7) & ~uint64_t{7};
  const uint64_t data_base = (table_offset + table.size() + kPageSize - 1) & ~(kPageSize - 1);

  FileHeader h{};
  std::memcpy(h.magic, kImageMagic, 8);
  h.version = kFormatVersion;
  h.header_size = sizeof(FileHeader);
  h.manifest_offset = manifest_offset;
  h.manifest_length = manifest_bytes.size();
  h.table_offset = table_offset;
  h.table_length = table.size();
  h.data_offset = data_base;
  h.data_length = data_length;
  h.meta_hash = hash64_2(manifest_bytes.data(), manifest_bytes.size(), table.data(), table.size());
  h.header_hash = hash64(&h, offsetof(FileHeader, header_hash));
  std::string prefix(data_base, '\0');
  std::memcpy(prefix.data(), &h, sizeof h);
  std::memcpy(prefix.data() + manifest_offset, manifest_bytes.data(), manifest_bytes.size());
  std::memcpy(prefix.data() + table_offset, table.data(), table.size());

  STOKE_TRY(make_dirs(images_dir, 0755));
  std::string tmp = images_dir + "/.tmp-" + std::to_string(getpid()) + "-" + std::to_string(g_tmp_counter++);
  unique_fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) return sys_error("create " + tmp);
  auto cleanup_fail = [&](Error e) {
    ::unlink(tmp.c_str());
    return e;
  };
  Sha256 sha;
  sha.update(prefix.data(), prefix.size());
  if (!pwrite_exact(out.get(), prefix.data(), prefix.size(), 0)) return cleanup_fail(sys_error("write " + tmp));
  // The data area, zero pages left as holes (and hashed as zeros).
  std::string buf(1 << 20, '\0');
  for (uint64_t done = 0; done < data_length;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), data_length - done));
    if (!pread_exact(data_fd, buf.data(), n, data_offset + done))
      return cleanup_fail(plain_error(step, "the data area is shorter than the header says (truncated dump?)"));
    sha.update(buf.data(), n);
    for (size_t at = 0; at < n;) {
      if (all_zero(buf.data() + at, kPageSize)) {
        at += kPageSize;
        continue;
      }
      size_t run = kPageSize;
      while (at + run < n && !all_zero(buf.data() + at + run, kPageSize)) run += kPageSize;
      if (!pwrite_exact(out.get(), buf.data() + at, run, data_base + done + at))
        return cleanup_fail(sys_error("write " + tmp));
      at += run;
    }
    done += n;
  }
  const uint64_t total = data_base + data_length;
  if (ftruncate(out.get(), static_cast<off_t>(total)) != 0) return cleanup_fail(sys_error("ftruncate " + tmp));
  if (fchmod(out.get(), 0444) != 0) return cleanup_fail(sys_error("fchmod " + tmp));
  if (fsync(out.get()) != 0) return cleanup_fail(sys_error("fsync " + tmp));
  auto digest = sha.hex();
  if (!digest.ok()) return cleanup_fail(digest.error());

  ImageInfo info;
  info.sha256 = digest.value();
  info.path = images_dir + "/" + info.sha256 + ".img";
  info.size_bytes = total;
  manifest.mutable_layout()->set_header_bytes(data_base);
  info.manifest = std::move(manifest);
  struct stat st;
  if (::stat(info.path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == total) {
    // Content addressed: an identical image is already there; never touch it.
    ::unlink(tmp.c_str());
    info.reused = true;
  } else {
    if (::rename(tmp.c_str(), info.path.c_str()) != 0) return cleanup_fail(sys_error("rename " + tmp));
    unique_fd dir(::open(images_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) fsync(dir.get());
  }
  if (::stat(info.path.c_str(), &st) == 0) info.disk_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  return info;
}

Result<ImageInfo> finalize_image(int dump_fd, const std::string& images_dir, const ImageLabels& labels) {
  const std::string step = "finalize image";
  struct stat st;
  if (fstat(dump_fd, &st) != 0) return sys_error(step + ": fstat of the dump fd");
  if (!S_ISREG(st.st_mode)) return plain_error(step, "the dump fd is not a regular file");
  FileHeader h{};
  if (static_cast<uint64_t>(st.st_size) < sizeof h || !pread_exact(dump_fd, &h, sizeof h, 0))
    return plain_error(step, "the dump is empty or shorter than its header (did the checkpoint run?)");
  const char* why = nullptr;
  if (!check_file_header(h, kDumpMagic, static_cast<uint64_t>(st.st_size), &why))
    return plain_error(step, std::string("the dump is not valid: ") + why);
  std::string table(h.table_length, '\0');
  if (!pread_exact(dump_fd, table.data(), table.size(), h.table_offset)) return sys_error(step + ": read the dump");
  if (hash64_2(nullptr, 0, table.data(), table.size()) != h.meta_hash)
    return plain_error(step, "the dump's restore table is corrupt (hash mismatch)");
  TableProblem p = check_table(table.data(), table.size(), h.data_length);
  if (p.exit_code != 0) return plain_error(step, std::string("the dump's restore table is invalid: ") + p.message);
  Manifest m = manifest_from_table(table, h.data_length, labels);
  auto info = write_image(images_dir, std::move(m), table, dump_fd, h.data_offset, h.data_length);
  if (!info.ok()) return info.error().context(step);
  return info;
}

}  // namespace stoke::image
