#include "artifact_files.h"

#include <algorithm>
#include <fstream>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace atelier::cli {

int NextImageNumber(const std::filesystem::path& dir) {
  static const std::regex kNumbered(R"(^(\d{5,})-.*)");
  int next = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    int number = 0;
    if (std::regex_match(name, m, kNumbered) && absl::SimpleAtoi(m[1].str(), &number) && number < 99999999) {
      next = std::max(next, number + 1);
    }
  }
  return next;
}

absl::StatusOr<std::optional<std::filesystem::path>> ArtifactFiles::Add(const v1::Artifact& artifact) {
  std::string name = artifact.name();
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\\') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("artifact name '", name, "' is not a plain file name"));
  }
  if (artifact.plugin() == "export") {
    if (export_number_ < 0) export_number_ = NextImageNumber(dir_);
    name = absl::StrFormat("%05d-%s", export_number_, name);
  }
  const auto it = written_.find(name);
  const std::uint64_t have = it == written_.end() ? 0 : it->second;
  if (artifact.offset() != have) {
    return absl::DataLossError(absl::StrCat("artifact ", name, ": a chunk at ", artifact.offset(), ", expected ", have));
  }
  const std::filesystem::path path = dir_ / name;
  std::ofstream out(path, have == 0 ? std::ios::binary | std::ios::trunc : std::ios::binary | std::ios::app);
  out.write(artifact.data().data(), static_cast<std::streamsize>(artifact.data().size()));
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  const std::uint64_t now = have + artifact.data().size();
  // A daemon before chunking sends neither total_size nor last: one message is the whole file.
  const bool last = artifact.last() || (artifact.total_size() == 0 && artifact.offset() == 0);
  if (!last) {
    written_[name] = now;
    return std::optional<std::filesystem::path>();
  }
  written_.erase(name);
  return std::optional<std::filesystem::path>(path);
}

}  // namespace atelier::cli
