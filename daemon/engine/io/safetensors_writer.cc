#include "engine/io/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/io/tensor_file.h"

namespace atelier::engine {
namespace fs = std::filesystem;

absl::Status WriteSafetensors(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  std::vector<at::Tensor> contiguous;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || !names.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor name '", name, "' is duplicated or reserved"));
    }
    if (!tensor.device().is_cpu()) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is not on the CPU"));
    auto dtype = FromScalarType(tensor.scalar_type());
    if (!dtype.ok()) return dtype.status();
    at::Tensor c = tensor.contiguous();
    const std::uint64_t bytes = static_cast<std::uint64_t>(c.numel()) * DTypeSize(*dtype);
    header[name] = {{"dtype", DTypeName(*dtype)}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data buffer starts 8-byte aligned

  const fs::path temporary = path.string() + ".partial";
  FILE* out = std::fopen(temporary.c_str(), "wb");
  if (out == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write '", temporary.string(), "': ", std::strerror(errno)));
  }
  bool ok = true;
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>((text.size() >> (8 * i)) & 0xFF);
  ok &= std::fwrite(length, 1, 8, out) == 8;
  ok &= std::fwrite(text.data(), 1, text.size(), out) == text.size();
  for (const at::Tensor& t : contiguous) {
    const std::size_t bytes = static_cast<std::size_t>(t.numel()) * t.element_size();
    if (bytes > 0) ok &= std::fwrite(t.data_ptr(), 1, bytes, out) == bytes;
  }
  ok &= std::fclose(out) == 0;
  std::error_code ec;
  if (!ok) {
    fs::remove(temporary, ec);
    return absl::ResourceExhaustedError(absl::StrCat("writing '", path.string(), "' failed (disk full?)"));
  }
  fs::rename(temporary, path, ec);
  if (ec) {
    fs::remove(temporary, ec);
    return absl::PermissionDeniedError(absl::StrCat("cannot move the new file to '", path.string(), "'"));
  }
  return absl::OkStatus();
}

}  // namespace atelier::engine
