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
// format run too when their case.json names the same kind).
std::vector<FixtureCase> LoadCases(const std::string& name);

// |got - want| <= atol + rtol * |want| element-wise; on failure the message gives max abs and rel error.
::testing::AssertionResult AllClose(const at::Tensor& got, const at::Tensor& want, double atol, double rtol);

}  // namespace atelier::testing
