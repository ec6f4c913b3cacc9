#include "test_support.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

namespace atelier::testing {
namespace fs = std::filesystem;

fs::path FixturesDir() {
  const char* env = std::getenv("ATELIER_FIXTURES");
  if (env != nullptr && *env != '\0') return env;
  return ATELIER_DEFAULT_FIXTURES;
}

fs::path TestPlugin(const std::string& name) { return fs::path(ATELIER_TEST_PLUGINS_DIR) / ("test_" + name + ".so"); }
fs::path BuiltPlugin(const std::string& name) { return fs::path(ATELIER_BUILD_PLUGINS_DIR) / (name + ".so"); }
fs::path DaemonBinary() { return ATELIER_DAEMON_BINARY; }
fs::path ClientBinary() { return ATELIER_CLIENT_BINARY; }

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "atelier-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void CopyPlugin(const fs::path& plugin, const fs::path& dir, const std::string& file_name) {
  fs::create_directories(dir);
  // Unlink first: overwriting a library in place would corrupt it for a process that has it loaded.
  fs::remove(dir / file_name);
  fs::copy_file(plugin, dir / file_name);
}

long long CurrentRssBytes() {
  std::ifstream in("/proc/self/statm");
  long long pages_total = 0, pages_resident = 0;
  in >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

absl::Status RecordingSink::ReportPluginProgress(const std::string& plugin, const std::string& stage, int done,
                                                 int total, const std::string&) {
  progress.push_back({plugin, stage, done, total});
  return absl::OkStatus();
}

absl::Status RecordingSink::EmitFrame(const std::string& plugin, int index, std::string png, int width, int height) {
  frames.push_back({plugin, index, std::move(png), width, height});
  return absl::OkStatus();
}

absl::Status RecordingSink::EmitArtifact(const std::string& plugin, std::string name, std::string mime_type,
                                         std::string data) {
  artifacts.push_back({plugin, std::move(name), std::move(mime_type), std::move(data)});
  return absl::OkStatus();
}

}  // namespace atelier::testing
