#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/io/mapped_file_guard.h"
#include "absl/strings/str_join.h"
#include "util/limits.h"

namespace atelier::engine {
namespace {

using Json = nlohmann::ordered_json;

struct DTypeInfo {
  const char* name;
  DType dtype;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F64", DType::kF64, 8}, {"F32", DType::kF32, 4}, {"F16", DType::kF16, 2}, {"BF16", DType::kBF16, 2},
    {"I64", DType::kI64, 8}, {"I32", DType::kI32, 4}, {"I16", DType::kI16, 2}, {"I8", DType::kI8, 1},
    {"U8", DType::kU8, 1},   {"BOOL", DType::kBool, 1},
};

struct DuplicateName {
  std::string name;
};

absl::Status Invalid(absl::string_view label, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file '", label, "': ", what));
}

std::string ShapeString(const std::vector<std::int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::uint64_t> ReadUnsigned(const Json& value, absl::string_view label, absl::string_view what) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return value.get<std::uint64_t>();
  return Invalid(label, absl::StrCat(what, " must be a non-negative integer, got ", value.dump()));
}

absl::StatusOr<TensorEntry> ParseEntry(const std::string& name, const Json& value, std::uint64_t buffer_size,
                                       absl::string_view label) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!value.is_object()) return Invalid(label, absl::StrCat(where, " must be a JSON object"));
  TensorEntry entry;
  entry.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) {
    return Invalid(label, absl::StrCat(where, " has no string \"dtype\""));
  }
  const std::string dtype = dtype_it->get<std::string>();
  const DTypeInfo* info = nullptr;
  for (const auto& d : kDTypes) {
    if (dtype == d.name) info = &d;
  }
  if (info == nullptr) {
    return Invalid(label, absl::StrCat(where, " has unknown dtype '", dtype,
                                       "'; known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"));
  }
  entry.dtype = info->dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) {
    return Invalid(label, absl::StrCat(where, " has no array \"shape\""));
  }
  std::uint64_t bytes = info->size;
  for (const Json& dim : *shape_it) {
    auto d = ReadUnsigned(dim, label, absl::StrCat(where, " shape entry"));
    if (!d.ok()) return d.status();
    if (*d > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(bytes, *d, &bytes)) {
      return Invalid(label, absl::StrCat(where, " shape ", shape_it->dump(), " overflows the byte count"));
    }
    entry.shape.push_back(static_cast<std::int64_t>(*d));
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
    return Invalid(label, absl::StrCat(where, " needs \"data_offsets\": [begin, end]"));
  }
  auto begin = ReadUnsigned((*offsets_it)[0], label, absl::StrCat(where, " data_offsets[0]"));
  if (!begin.ok()) return begin.status();
  auto end = ReadUnsigned((*offsets_it)[1], label, absl::StrCat(where, " data_offsets[1]"));
  if (!end.ok()) return end.status();
  entry.begin = *begin;
  entry.end = *end;
  if (entry.begin > entry.end) {
    return Invalid(label, absl::StrCat(where, " data_offsets [", entry.begin, ", ", entry.end, "] run backwards"));
  }
  if (entry.end > buffer_size) {
    return Invalid(label, absl::StrCat(where, " data_offsets end ", entry.end, " lies beyond the data buffer of ",
                                       buffer_size, " bytes"));
  }
  if (entry.end - entry.begin != bytes) {
    return Invalid(label, absl::StrCat(where, " is ", dtype, " ", ShapeString(entry.shape), ": expected ", bytes,
                                       " bytes, data_offsets give ", entry.end - entry.begin));
  }
  return entry;
}

}  // namespace

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

std::size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensors(absl::string_view bytes, absl::string_view label) {
  if (bytes.size() < 8) {
    return Invalid(label, absl::StrCat("file is ", bytes.size(),
                                       " bytes; a safetensors file starts with an 8-byte header length"));
  }
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return Invalid(label, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                       kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > bytes.size() - 8) {
    return Invalid(label, absl::StrCat("header length ", header_len, " exceeds the file size minus 8 (",
                                       bytes.size() - 8, ")"));
  }
  const absl::string_view header_text = bytes.substr(8, header_len);
  if (header_text.empty() || header_text[0] != '{') {
    return Invalid(label, "header must be a JSON object starting with '{'");
  }

  std::set<std::string> seen;
  Json header;
  try {
    header = Json::parse(header_text.begin(), header_text.end(),
                         [&seen](int depth, Json::parse_event_t event, Json& parsed) {
                           if (event == Json::parse_event_t::key && depth == 1) {
                             std::string key = parsed.get<std::string>();
                             if (!seen.insert(key).second) throw DuplicateName{std::move(key)};
                           }
                           return true;
                         });
  } catch (const DuplicateName& dup) {
    return Invalid(label, absl::StrCat("tensor '", dup.name, "' appears twice in the header"));
  } catch (const nlohmann::json::exception& e) {
    return Invalid(label, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return Invalid(label, "header must be a JSON object");

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const std::uint64_t buffer_size = bytes.size() - out.data_offset;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return Invalid(label, "__metadata__ must be an object of strings");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return Invalid(label, absl::StrCat("__metadata__ value of '", mkey, "' must be a string"));
        }
        out.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    auto entry = ParseEntry(key, value, buffer_size, label);
    if (!entry.ok()) return entry.status();
    out.tensors.push_back(*std::move(entry));
  }

  // Ranges must tile the buffer exactly: sorted by offset, each starts where the previous ended.
  std::stable_sort(out.tensors.begin(), out.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expected = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry& t : out.tensors) {
    if (t.begin != expected) {
      if (t.begin < expected) {
        return Invalid(label, absl::StrCat("tensor '", t.name, "' [", t.begin, ", ", t.end, ") overlaps tensor '",
                                           previous ? previous->name : "", "' ending at ", expected));
      }
      return Invalid(label, absl::StrCat("gap in the data buffer: tensor '", t.name, "' starts at ", t.begin,
                                         ", expected ", expected));
    }
    expected = t.end;
    previous = &t;
  }
  if (expected != buffer_size) {
    return Invalid(label, absl::StrCat("tensors cover ", expected, " bytes of the ", buffer_size,
                                       "-byte data buffer; the rest is unaccounted for"));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const MappedFile>> MappedFile::Map(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path.string(), "': ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path.string(), "' is not a regular file"));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  void* data = nullptr;
  if (size > 0) {
    // Read-only: tensor views share the page cache; nothing can write to the file through them.
    data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ResourceExhaustedError(absl::StrCat("cannot map '", path.string(), "': ", std::strerror(err)));
    }
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  RegisterMappedFile(data, size);  // a truncation while mapped is repaired, not fatal (mapped_file_guard.h)
  return std::shared_ptr<const MappedFile>(new MappedFile(data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) {
    UnregisterMappedFile(data_);
    ::munmap(const_cast<void*>(data_), size_);
  }
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(const std::filesystem::path& path) {
  auto mapping = MappedFile::Map(path);
  if (!mapping.ok()) return mapping.status();
  auto header = ParseSafetensors((*mapping)->bytes(), path.filename().string());
  if (!header.ok()) return header.status();
  auto file = std::make_shared<SafetensorsFile>();
  file->path_ = path;
  file->mapping_ = *std::move(mapping);
  file->header_ = *std::move(header);
  for (std::size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_[file->header_.tensors[i].name] = i;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

const TensorEntry* SafetensorsFile::Find(absl::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const std::byte* SafetensorsFile::Data(const TensorEntry& entry) const {
  return reinterpret_cast<const std::byte*>(mapping_->bytes().data()) + header_.data_offset + entry.begin;
}

}  // namespace atelier::engine
