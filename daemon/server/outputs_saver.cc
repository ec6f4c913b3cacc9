#include "server/outputs_saver.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/log.h"

namespace atelier::server {
namespace fs = std::filesystem;

namespace {

int NextNumber(const fs::path& dir) {
  static const std::regex kNumbered(R"(^(\d{5,})-.*)");
  int next = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    int number = 0;
    if (std::regex_match(name, m, kNumbered) && absl::SimpleAtoi(m[1].str(), &number) && number < 99999999) {
      next = std::max(next, number + 1);
    }
  }
  return next;
}

std::string Today() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[16];
  std::strftime(text, sizeof(text), "%Y-%m-%d", &local);
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OutputsSaver>> OutputsSaver::Open(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    return absl::InvalidArgumentError(absl::StrCat("--outputs-dir '", dir.string(), "' cannot be created: ",
                                                   ec ? ec.message() : "not a directory"));
  }
  const fs::path probe = dir / ".atelier-write-test";
  {
    std::ofstream out(probe);
    out << "ok";
    if (!out) {
      return absl::InvalidArgumentError(absl::StrCat("--outputs-dir '", dir.string(), "' is not writable"));
    }
  }
  fs::remove(probe, ec);
  return std::unique_ptr<OutputsSaver>(new OutputsSaver(dir));
}

absl::StatusOr<fs::path> OutputsSaver::Save(const std::string& job_id, bool img2img, const std::string& name,
                                            const std::string& data) {
  if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos || name == "." ||
      name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("artifact name '", name, "' is not a plain file name"));
  }
  const fs::path folder = dir_ / (img2img ? "img2img-images" : "txt2img-images") / "AnimateDiff" / Today();
  std::lock_guard<std::mutex> lock(mu_);
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) {
    LogWarning(absl::StrCat("cannot create ", folder.string(), ": ", ec.message()));
    return absl::UnavailableError(absl::StrCat("'", name, "' was not saved in the daemon's --outputs-dir (",
                                               ec.message(), "); it was sent to you all the same"));
  }
  auto it = numbers_.find(job_id);
  if (it == numbers_.end()) {
    if (numbers_.size() > 256) numbers_.clear();
    it = numbers_.emplace(job_id, NextNumber(folder)).first;
  }
  const fs::path path = folder / absl::StrFormat("%05d-%s", it->second, name);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.close();  // a full disk may only show when the buffer is flushed
    if (!out.fail()) return path;
  }
  const int err = errno;
  fs::remove(path, ec);  // no half-written file is left behind
  // The client hears what happened (its artifact still arrives); the operator's log gets the path.
  LogWarning(absl::StrCat("cannot write ", path.string(), ": ", std::strerror(err)));
  return absl::UnavailableError(absl::StrCat("'", name, "' was not saved in the daemon's --outputs-dir (",
                                             std::strerror(err), "; the disk may be full); it was sent to you "
                                             "all the same"));
}

}  // namespace atelier::server
