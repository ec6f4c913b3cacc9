#include "fixture_case.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "engine/io/tensor_file.h"
#include "test_support.h"

namespace atelier::testing {
namespace fs = std::filesystem;

std::vector<FixtureCase> LoadCases(const std::string& name) {
  std::vector<FixtureCase> cases;
  const fs::path root = FixturesDir();
  if (!fs::is_directory(root)) return cases;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(root)) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& dir : dirs) {
    if (!fs::exists(dir / "case.json")) continue;
    FixtureCase c;
    c.json = nlohmann::json::parse(std::ifstream(dir / "case.json"), nullptr, false);
    if (c.json.is_discarded() || c.json.value("case", "") != name) continue;
    c.dir = dir;
    if (fs::exists(dir / "values.json")) c.values = nlohmann::json::parse(std::ifstream(dir / "values.json"));
    if (fs::exists(dir / "io.safetensors")) {
      auto io = engine::ReadTensorSet(dir / "io.safetensors");
      if (io.ok()) {
        for (auto& [key, tensor] : io->tensors) c.io[key] = tensor;
      } else {
        ADD_FAILURE() << "case " << dir << ": cannot read io.safetensors: " << io.status();
      }
    }
    if (c.json.contains("tolerance") && c.json["tolerance"].is_object()) {
      c.atol = c.json["tolerance"].value("atol", 0.0);
      c.rtol = c.json["tolerance"].value("rtol", 0.0);
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

std::string NoCaseMessage(const std::string& name) {
  const fs::path root = FixturesDir();
  std::ostringstream out;
  out << "no \"" << name << "\" fixture case (a folder whose case.json has \"case\": \"" << name << "\") under "
      << root << (fs::is_directory(root) ? "" : ", which is not a directory")
      << " (set ATELIER_FIXTURES to a folder of cases)";
  return out.str();
}

std::vector<FixtureCase> CasesOf(const std::string& name) {
  std::vector<FixtureCase> cases = LoadCases(name);
  if (cases.empty()) ADD_FAILURE() << NoCaseMessage(name);
  return cases;
}

std::vector<int> IoKeyNumbers(const FixtureCase& c, const std::string& prefix) {
  std::vector<int> numbers;
  for (const auto& [key, tensor] : c.io) {
    if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = key.substr(prefix.size());
    if (rest.size() > 9 || !std::all_of(rest.begin(), rest.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      continue;
    }
    numbers.push_back(std::stoi(rest));
  }
  std::sort(numbers.begin(), numbers.end());
  return numbers;
}

fs::path WeightsFile(const FixtureCase& c) {
  if (fs::exists(c.dir / "weights.safetensors")) return c.dir / "weights.safetensors";
  // "weights" at the top level, or under "config" as "weights" or "checkpoint" (samplers, txt2img-tiny, ...).
  std::string text = c.json.value("weights", "");
  const auto& config = c.json.contains("config") && c.json["config"].is_object() ? c.json["config"] : nlohmann::json();
  if (text.empty() && config.is_object()) text = config.value("weights", config.value("checkpoint", ""));
  return c.dir / text.substr(0, text.find(' '));
}

std::map<std::string, at::Tensor> ReadWeights(const FixtureCase& c, const std::string& prefix, at::ScalarType dtype) {
  std::map<std::string, at::Tensor> out;
  auto set = engine::ReadTensorSet(WeightsFile(c));
  EXPECT_TRUE(set.ok()) << set.status();
  if (!set.ok()) return out;
  for (const auto& [name, tensor] : set->tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    out[name.substr(prefix.size())] = tensor.is_floating_point() ? tensor.to(dtype) : tensor.clone();
  }
  return out;
}

::testing::AssertionResult AllClose(const at::Tensor& got, const at::Tensor& want, double atol, double rtol,
                                    const std::string& label) {
  if (!got.defined() || !want.defined()) return ::testing::AssertionFailure() << "undefined tensor";
  if (got.sizes() != want.sizes()) {
    std::ostringstream out;
    out << "shape " << got.sizes() << " != expected " << want.sizes();
    return ::testing::AssertionFailure() << out.str();
  }
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const at::Tensor diff = (g - w).abs();
  const at::Tensor allowed = w.abs() * rtol + atol;
  const bool ok = diff.le(allowed).all().item<bool>();
  const double max_abs = diff.numel() ? diff.max().item<double>() : 0.0;
  const double max_rel = diff.numel() ? (diff / w.abs().clamp_min(1e-12)).max().item<double>() : 0.0;
  std::printf("    %-40s max abs %.3g, max rel %.3g (atol %g, rtol %g)%s\n", label.empty() ? "compared" : label.c_str(),
              max_abs, max_rel, atol, rtol, ok ? "" : "  FAILED");
  if (ok) return ::testing::AssertionSuccess() << "max abs " << max_abs << ", max rel " << max_rel;
  return ::testing::AssertionFailure() << "max abs error " << max_abs << ", max rel error " << max_rel << " (atol "
                                       << atol << ", rtol " << rtol << ", " << diff.gt(allowed).sum().item<int64_t>()
                                       << " of " << diff.numel() << " elements outside)";
}

double RelativeRmsError(const at::Tensor& got, const at::Tensor& want, const std::string& label) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const double error = ((g - w).norm() / w.norm().clamp_min(1e-30)).item<double>();
  std::printf("    %-40s relative RMS error %.3g\n", label.c_str(), error);
  return error;
}

::testing::AssertionResult Uint8Equal(const at::Tensor& got, const at::Tensor& want, const at::Tensor& scaled,
                                      bool rounding, double boundary_tol, const std::string& label) {
  if (got.sizes() != want.sizes() || got.sizes() != scaled.sizes()) {
    return ::testing::AssertionFailure() << label << ": shapes differ";
  }
  const at::Tensor diff = (got.to(at::kInt) - want.to(at::kInt)).abs();
  const at::Tensor s = scaled.to(at::kDouble);
  const at::Tensor boundary = rounding ? at::floor(s) + 0.5 : at::round(s);
  const at::Tensor near = (s - boundary).abs() <= boundary_tol;
  const int64_t off_by_one = (diff == 1).sum().item<int64_t>();
  const int64_t bad = ((diff > 1) | ((diff == 1) & ~near)).sum().item<int64_t>();
  std::printf("    %-40s %lld of %lld bytes differ by 1 (at quantisation boundaries), %lld wrong\n", label.c_str(),
              static_cast<long long>(off_by_one), static_cast<long long>(got.numel()), static_cast<long long>(bad));
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << label << ": " << bad << " bytes differ away from a quantisation boundary (max diff "
                                       << diff.max().item<int>() << ")";
}

std::filesystem::path InstallTinyCheckpoint(const std::filesystem::path& weights,
                                            const std::filesystem::path& models_root) {
  const std::filesystem::path sd = models_root / "Stable-diffusion";
  std::filesystem::create_directories(sd);
  std::filesystem::copy_file(weights, sd / "tiny.safetensors");
  std::filesystem::copy_file(std::filesystem::path(ATELIER_SOURCE_DIR) / "tests/data/tiny-sd.yaml",
                             sd / "tiny.yaml");
  return sd;
}

}  // namespace atelier::testing
