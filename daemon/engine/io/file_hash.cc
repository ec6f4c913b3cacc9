#include "engine/io/file_hash.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "util/log.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
struct DigestCloser {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// Hashes up to `limit` bytes from `offset`.
absl::StatusOr<std::string> HashRange(const fs::path& path, long offset, std::uint64_t limit) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot read '", path.filename().string(), "': ", std::strerror(errno)));
  }
  std::unique_ptr<EVP_MD_CTX, DigestCloser> ctx(EVP_MD_CTX_new());
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("OpenSSL SHA-256 is unavailable");
  }
  if (offset > 0 && std::fseek(file.get(), offset, SEEK_SET) != 0) {
    limit = 0;  // shorter than the offset: the hash of nothing, as Python's seek+read gives
  }
  std::vector<unsigned char> buffer(1 << 20);
  std::uint64_t done = 0;
  while (done < limit) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), limit - done));
    const std::size_t n = std::fread(buffer.data(), 1, want, file.get());
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), n);
    done += n;
  }
  if (std::ferror(file.get())) return absl::DataLossError(absl::StrCat("read error in '", path.filename().string(), "'"));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

bool Stat(const fs::path& path, std::uint64_t* size, std::int64_t* mtime_ns) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  *size = static_cast<std::uint64_t>(st.st_size);
  *mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

std::string CacheKey(const fs::path& path, HashCache::Kind kind) {
  const std::string key = fs::absolute(path).lexically_normal().string();
  return kind == HashCache::Kind::kAddnet ? "addnet:" + key : key;
}

}  // namespace

absl::StatusOr<std::string> AddnetHash(const fs::path& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot read '", path.filename().string(), "': ", std::strerror(errno)));
  }
  unsigned char size_bytes[8];
  if (std::fread(size_bytes, 1, 8, file.get()) != 8) {
    return absl::InvalidArgumentError(absl::StrCat("'", path.filename().string(), "' is not a safetensors file"));
  }
  std::uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | size_bytes[i];
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec || header > size - 8) {
    return absl::InvalidArgumentError(absl::StrCat("'", path.filename().string(), "': bad safetensors header length"));
  }
  return HashRange(path, static_cast<long>(8 + header), UINT64_MAX);
}

absl::StatusOr<std::string> Sha256File(const fs::path& path) { return HashRange(path, 0, UINT64_MAX); }

absl::StatusOr<std::string> ShortHash(const fs::path& path) {
  auto full = HashRange(path, 0x100000, 0x10000);
  if (!full.ok()) return full.status();
  return full->substr(0, 8);
}

HashCache::HashCache(fs::path file) : file_(std::move(file)) {
  if (file_.empty()) return;
  std::ifstream in(file_);
  if (!in) return;
  const auto json = nlohmann::json::parse(in, nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("hashes") || !json["hashes"].is_object()) {
    LogWarning(absl::StrCat("ignoring unreadable hash cache ", file_.string()));
    return;
  }
  for (const auto& [key, value] : json["hashes"].items()) {
    if (!value.is_object() || !value.contains("sha256") || !value["sha256"].is_string()) continue;
    Entry e;
    e.size = value.value("size", std::uint64_t{0});
    e.mtime_ns = value.value("mtime_ns", std::int64_t{0});
    e.sha256 = value["sha256"].get<std::string>();
    entries_[key] = e;
  }
}

std::string HashCache::Cached(const fs::path& path, Kind kind) {
  std::uint64_t size;
  std::int64_t mtime;
  if (!Stat(path, &size, &mtime)) return "";
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = entries_.find(CacheKey(path, kind));
  if (it == entries_.end() || it->second.size != size || it->second.mtime_ns != mtime) return "";
  return it->second.sha256;
}

absl::StatusOr<std::string> HashCache::Sha256(const fs::path& path, Kind kind) {
  if (std::string cached = Cached(path, kind); !cached.empty()) return cached;
  std::uint64_t size;
  std::int64_t mtime;
  if (!Stat(path, &size, &mtime)) return absl::NotFoundError(absl::StrCat("cannot stat '", path.string(), "'"));
  auto hash = kind == Kind::kAddnet ? AddnetHash(path) : Sha256File(path);
  if (!hash.ok()) return hash.status();
  std::lock_guard<std::mutex> lock(mu_);
  entries_[CacheKey(path, kind)] = Entry{size, mtime, *hash};
  Save();
  return hash;
}

void HashCache::Save() {
  if (file_.empty()) return;
  nlohmann::json json;
  json["hashes"] = nlohmann::json::object();
  for (const auto& [key, e] : entries_) {
    json["hashes"][key] = {{"size", e.size}, {"mtime_ns", e.mtime_ns}, {"sha256", e.sha256}};
  }
  std::error_code ec;
  fs::create_directories(file_.parent_path(), ec);
  const fs::path temporary = file_.string() + ".partial";
  {
    std::ofstream out(temporary);
    out << json.dump(1);
    if (!out) {
      LogWarning(absl::StrCat("cannot write the hash cache ", file_.string()));
      return;
    }
  }
  fs::rename(temporary, file_, ec);
}

}  // namespace atelier::engine
