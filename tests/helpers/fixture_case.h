// Reading golden fixture cases: discovering case folders by their case.json "case" name, loading io tensors,
// and comparing tensors with the case's tolerance while reporting the max abs/rel error.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace atelier::testing {

struct FixtureCase {
  std::filesystem::path dir;
  nlohmann::json json;    // case.json
  nlohmann::json values;  // values.json (null when absent)
  std::map<std::string, at::Tensor> io;  // io.safetensors (empty when absent)
  double atol = 0, rtol = 0;
};

// Every case folder under the fixtures directory whose case.json has "case": `name` (other folders in the same
// format run too when their case.json names the same kind). A case whose io.safetensors cannot be read is a test
// failure naming the file.
std::vector<FixtureCase> LoadCases(const std::string& name);

// LoadCases(name) for a test that checks the cases of a kind: when there is none it records a test failure
// (NoCaseMessage) naming the folder it looked in, so a test looping over the result never passes vacuously.
std::vector<FixtureCase> CasesOf(const std::string& name);

// Why there is no case of kind `name`: the kind, the fixtures folder searched (FixturesDir(), from
// ATELIER_FIXTURES) and whether that folder exists.
std::string NoCaseMessage(const std::string& name);

// The numbers N of the case's io tensors named `prefix` followed by N (digits only), ascending: e.g. "clip_skip"
// gives the Clip skip values a case records goldens for.
std::vector<int> IoKeyNumbers(const FixtureCase& c, const std::string& prefix);

// The case's weights file: weights.safetensors in its folder, else the file its case.json "weights" (or
// "config.weights" / "config.checkpoint") names (relative to the folder; the first word of the text).
std::filesystem::path WeightsFile(const FixtureCase& c);

// Installs a tiny SD1.x checkpoint as a user would: `weights` as <models_root>/Stable-diffusion/tiny.safetensors
// with tests/data/tiny-sd.yaml beside it as tiny.yaml. Returns the Stable-diffusion folder.
std::filesystem::path InstallTinyCheckpoint(const std::filesystem::path& weights,
                                            const std::filesystem::path& models_root);

// The tensors of WeightsFile(c) whose names start with `prefix`, with the prefix removed, converted to `dtype`
// (fixtures store F16; goldens are F32 computations on those values).
std::map<std::string, at::Tensor> ReadWeights(const FixtureCase& c, const std::string& prefix,
                                              at::ScalarType dtype = at::kFloat);

// |got - want| <= atol + rtol * |want| element-wise. The max abs and rel error are printed (with `label`) whether
// or not it passes, and are in the failure message.
::testing::AssertionResult AllClose(const at::Tensor& got, const at::Tensor& want, double atol, double rtol,
                                    const std::string& label = "");

// ||got - want|| / ||want|| (Frobenius), printed with `label`.
double RelativeRmsError(const at::Tensor& got, const at::Tensor& want, const std::string& label);

// uint8 images equal, except +-1 where the value before quantisation (`scaled`, in 0..255 units, computed here)
// lies within `boundary_tol` of the quantisation boundary (an integer when truncating, k + 0.5 when rounding).
::testing::AssertionResult Uint8Equal(const at::Tensor& got, const at::Tensor& want, const at::Tensor& scaled,
                                      bool rounding, double boundary_tol, const std::string& label);

}  // namespace atelier::testing
