#include "engine/io/model_folders.h"

#include <algorithm>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

constexpr const char* kExtensions[] = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"};

bool IsDirectory(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string FormatOf(const fs::path& p) {
  const std::string ext = absl::AsciiStrToLower(p.extension().string());
  for (const char* known : kExtensions) {
    if (ext == known) return ext.substr(1);
  }
  return "";
}

// True when `inner` equals `outer` or lies below it (both canonical).
bool IsWithin(const fs::path& outer, const fs::path& inner) {
  auto o = outer.begin(), i = inner.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *o != *i) return false;
  }
  return true;
}

}  // namespace

const char* ModelFolderName(ModelFolder folder) {
  switch (folder) {
    case ModelFolder::kCheckpoint: return "Stable-diffusion";
    case ModelFolder::kVae: return "VAE";
    case ModelFolder::kEmbedding: return "embeddings";
    case ModelFolder::kControlNet: return "ControlNet";
    case ModelFolder::kMotionModule: return "AnimateDiff";
    case ModelFolder::kVaeApprox: return "VAE-approx";
    case ModelFolder::kRife: return "RIFE";
    case ModelFolder::kLora: return "Lora";
    case ModelFolder::kEsrgan: return "ESRGAN";
  }
  return "?";
}

absl::StatusOr<ModelFolders> ModelFolders::Open(const fs::path& root) {
  if (!IsDirectory(root)) {
    return absl::NotFoundError(absl::StrCat("models directory '", root.string(),
                                            "' does not exist or is not a directory (--models-dir)"));
  }
  ModelFolders folders;
  folders.root_ = root;
  if (IsDirectory(root / "models")) {
    // A WebUI install root: models/<Kind> and embeddings/ beside models/.
    folders.models_ = root / "models";
    folders.embeddings_ = root / "embeddings";
  } else {
    // A models folder itself; embeddings inside it, or beside it as in a WebUI install.
    folders.models_ = root;
    folders.embeddings_ = IsDirectory(root / "embeddings") ? root / "embeddings" : root.parent_path() / "embeddings";
  }
  return folders;
}

fs::path ModelFolders::FolderPath(ModelFolder folder) const {
  if (folder == ModelFolder::kEmbedding) return embeddings_;
  if (folder == ModelFolder::kCheckpoint && !checkpoints_.empty()) return checkpoints_;
  return models_ / ModelFolderName(folder);
}

std::vector<fs::path> ModelFolders::FolderPaths(ModelFolder folder) const {
  std::vector<fs::path> dirs = {FolderPath(folder)};
  // sd-webui-controlnet also reads its own models folder in a WebUI install.
  if (folder == ModelFolder::kControlNet && models_ == root_ / "models") {
    dirs.push_back(root_ / "extensions" / "sd-webui-controlnet" / "models");
  }
  if (folder == ModelFolder::kLora) dirs.push_back(models_ / "LyCORIS");  // WebUI reads both
  if (folder == ModelFolder::kEsrgan) dirs.push_back(models_ / "RealESRGAN");
  if (!shipped_.empty() && folder != ModelFolder::kCheckpoint && folder != ModelFolder::kEmbedding) {
    dirs.push_back(shipped_ / ModelFolderName(folder));
  }
  return dirs;
}

void ModelFolders::AddShippedFolders(fs::path models_dir) {
  std::error_code ec;
  if (fs::equivalent(models_dir, models_, ec) && !ec) return;  // the user's folder is the shipped one
  shipped_ = std::move(models_dir);
}

std::vector<ModelFileEntry> ModelFolders::List(ModelFolder folder) const {
  std::vector<ModelFileEntry> out;
  std::set<std::string> seen;
  for (const fs::path& dir : FolderPaths(folder)) {
    const bool shipped = !shipped_.empty() && dir == shipped_ / ModelFolderName(folder);  // as FolderPaths adds it
    for (auto& e : ListDirectory(folder, dir)) {
      e.shipped = shipped;
      if (seen.insert(e.filename).second) out.push_back(std::move(e));  // the first folder wins a name
    }
  }
  std::sort(out.begin(), out.end(),
            [](const ModelFileEntry& a, const ModelFileEntry& b) { return a.filename < b.filename; });
  return out;
}

std::vector<ModelFileEntry> ModelFolders::ListDirectory(ModelFolder folder, const fs::path& dir) const {
  std::vector<ModelFileEntry> out;
  std::error_code ec;
  const fs::path real_root = fs::canonical(dir, ec);
  if (ec || !IsDirectory(real_root)) return out;
  // Symlinks are followed only while they stay inside the folder; each real directory is visited once.
  std::set<fs::path> visited = {real_root};
  std::vector<fs::path> pending = {dir};
  while (!pending.empty()) {
    const fs::path current = pending.back();
    pending.pop_back();
    for (const auto& entry : fs::directory_iterator(current, fs::directory_options::skip_permission_denied, ec)) {
      std::error_code entry_ec;
      const fs::path real = fs::canonical(entry.path(), entry_ec);
      if (entry_ec || !IsWithin(real_root, real)) continue;
      if (fs::is_directory(real, entry_ec)) {
        if (visited.insert(real).second) pending.push_back(entry.path());
        continue;
      }
      if (!fs::is_regular_file(real, entry_ec)) continue;
      const std::string format = FormatOf(entry.path());
      if (format.empty()) continue;
      ModelFileEntry file;
      file.folder = folder;
      file.filename = absl::StrReplaceAll(fs::relative(entry.path(), dir, entry_ec).generic_string(), {{"\\", "/"}});
      file.name = file.filename.substr(0, file.filename.size() - format.size() - 1);
      file.format = format;
      file.size_bytes = static_cast<std::int64_t>(fs::file_size(real, entry_ec));
      out.push_back(std::move(file));
    }
  }
  return out;
}

absl::StatusOr<fs::path> ModelFolders::Resolve(ModelFolder folder, const std::string& relative) const {
  const fs::path rel(relative);
  if (relative.empty() || rel.is_absolute() || absl::StrContains(relative, '\0')) {
    return absl::InvalidArgumentError(
        absl::StrCat("model file name ", Quoted(relative), " must be a path relative to ", ModelFolderName(folder), "/"));
  }
  for (const auto& part : rel) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("model file name ", Quoted(relative), " may not contain '..'"));
    }
  }
  std::error_code ec;
  fs::path dir = FolderPath(folder);
  for (const fs::path& d : FolderPaths(folder)) {
    if (fs::is_regular_file(d / rel, ec)) {
      dir = d;
      break;
    }
  }
  const fs::path candidate = dir / rel;
  if (!fs::is_regular_file(candidate, ec)) {
    return absl::NotFoundError(
        absl::StrCat("no file ", Quoted(relative), " in the ", ModelFolderName(folder), " folder"));
  }
  const fs::path real_dir = fs::canonical(dir, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("the ", ModelFolderName(folder), " folder does not exist"));
  const fs::path real_file = fs::canonical(candidate, ec);
  if (ec || !IsWithin(real_dir, real_file)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model file ", Quoted(relative), " resolves outside the ", ModelFolderName(folder), " folder"));
  }
  return real_file;
}

}  // namespace atelier::engine
