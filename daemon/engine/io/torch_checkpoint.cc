#include "engine/io/torch_checkpoint.h"

#include <zip.h>

#include <ATen/Functions.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/pickle.h"
#include "util/log.h"

namespace atelier::engine {
namespace {

using pickle::Kind;
using pickle::ValuePtr;

constexpr std::uint64_t kMaxPickleBytes = 1ull << 30;  // data.pkl of a real SD checkpoint is ~100 KB
constexpr int kMaxNesting = 4;                          // dicts of tensors inside the state dict

// The tensors a checkpoint's pickle describes, before storages are read.
struct Described {
  std::vector<std::pair<std::string, std::shared_ptr<pickle::TensorRef>>> tensors;
  std::map<std::string, std::shared_ptr<pickle::StorageRef>> storages;  // by key
};

absl::Status Invalid(absl::string_view label, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("checkpoint '", label, "': ", what));
}

// Records storages by key; a key seen twice must describe the same storage.
absl::StatusOr<std::shared_ptr<pickle::StorageRef>> ResolveStorage(const pickle::Value& pid,
                                                                   std::size_t expected_fields, Described& out,
                                                                   absl::string_view label) {
  if (pid.kind != Kind::kTuple || pid.items.size() < expected_fields || pid.items[0]->kind != Kind::kString ||
      pid.items[0]->text != "storage") {
    return Invalid(label, absl::StrCat("unexpected persistent id ", pickle::Describe(pid)));
  }
  const auto& items = pid.items;
  DType dtype;
  if (items[1]->kind != Kind::kGlobal || !pickle::StorageDType(items[1]->text, &dtype)) {
    return Invalid(label, absl::StrCat("unknown storage type ", pickle::Describe(*items[1])));
  }
  if (items[2]->kind != Kind::kString || items[4]->kind != Kind::kInt || items[4]->integer < 0) {
    return Invalid(label, "storage id needs a string key and a non-negative element count");
  }
  if (expected_fields == 6 && items[5]->kind != Kind::kNone) {
    return Invalid(label, "legacy storage views (view_metadata) are not supported");
  }
  auto& ref = out.storages[items[2]->text];
  if (ref == nullptr) {
    ref = std::make_shared<pickle::StorageRef>();
    ref->key = items[2]->text;
    ref->dtype = dtype;
    ref->numel = items[4]->integer;
  } else if (ref->dtype != dtype || ref->numel != items[4]->integer) {
    return Invalid(label, absl::StrCat("storage '", ref->key, "' is described twice, differently"));
  }
  return ref;
}

// Collects the tensors of a state dict; nested dicts get dotted names. Non-tensor values are skipped.
void CollectTensors(const pickle::Value& dict, const std::string& prefix, int depth, Described& out, int& skipped) {
  for (const auto& [key, value] : dict.entries) {
    if (key->kind != Kind::kString) {
      ++skipped;
      continue;
    }
    const std::string name = prefix + key->text;
    if (value->kind == Kind::kTensor) {
      out.tensors.emplace_back(name, value->tensor);
    } else if (value->kind == Kind::kDict && depth < kMaxNesting) {
      CollectTensors(*value, name + ".", depth + 1, out, skipped);
    } else {
      ++skipped;
    }
  }
}

// WebUI's get_state_dict_from_checkpoint: pl_sd.pop("state_dict", pl_sd), then drop a nested "state_dict".
absl::Status ExtractStateDict(const ValuePtr& root, Described& out, absl::string_view label) {
  if (root->kind != Kind::kDict) {
    return Invalid(label, absl::StrCat("the pickle holds ", pickle::Describe(*root), ", not a dict of tensors"));
  }
  const pickle::Value* state = root.get();
  if (const pickle::Value* wrapped = root->Get("state_dict"); wrapped != nullptr && wrapped->kind == Kind::kDict) {
    state = wrapped;
  }
  int skipped = 0;
  pickle::Value filtered = *state;
  filtered.entries.erase(std::remove_if(filtered.entries.begin(), filtered.entries.end(),
                                        [](const auto& e) {
                                          return e.first->kind == Kind::kString && e.first->text == "state_dict";
                                        }),
                         filtered.entries.end());
  CollectTensors(filtered, "", 0, out, skipped);
  if (skipped > 0) LogDebug(absl::StrCat(label, ": ignored ", skipped, " non-tensor entries"));
  return absl::OkStatus();
}

TensorIndex ToIndex(const Described& described, const char* format) {
  TensorIndex index;
  index.format = format;
  for (const auto& [name, ref] : described.tensors) {
    index.tensors.push_back({name, ref->storage->dtype, ref->sizes});
  }
  index.Build();
  return index;
}

// A tensor's logical values from its storage: validated bounds, views copied out.
absl::StatusOr<at::Tensor> Materialize(const std::string& name, const pickle::TensorRef& ref, const at::Tensor& storage,
                                       absl::string_view label) {
  const std::int64_t storage_numel = ref.storage->numel;
  std::int64_t numel = 1;
  std::int64_t last = ref.offset;
  bool contiguous = true;
  std::int64_t expected_stride = 1;
  if (ref.offset < 0) return Invalid(label, absl::StrCat("tensor '", name, "' has a negative storage offset"));
  for (std::size_t d = ref.sizes.size(); d-- > 0;) {
    const std::int64_t size = ref.sizes[d], stride = ref.strides[d];
    if (size < 0 || stride < 0) return Invalid(label, absl::StrCat("tensor '", name, "' has a negative size or stride"));
    std::int64_t extent;
    if (__builtin_mul_overflow(numel, size, &numel) ||
        (size > 0 && (__builtin_mul_overflow(size - 1, stride, &extent) || __builtin_add_overflow(last, extent, &last)))) {
      return Invalid(label, absl::StrCat("tensor '", name, "' size/stride overflow"));
    }
    if (size != 1 && stride != expected_stride) contiguous = false;
    expected_stride *= size;
  }
  if (numel > 0 && last >= storage_numel) {
    return Invalid(label, absl::StrCat("tensor '", name, "' reaches element ", last, " of a storage of ",
                                       storage_numel, " elements"));
  }
  if (numel == 0) return at::empty(ref.sizes, storage.options());
  if (contiguous && ref.offset == 0 && numel == storage_numel) return storage.view(ref.sizes);
  // A view (offset, slice, transpose) of a possibly shared storage: its own contiguous copy of the logical values.
  return storage.as_strided(ref.sizes, ref.strides, ref.offset).clone(at::MemoryFormat::Contiguous);
}

// ---- zip format ----

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

class ZipArchive {
 public:
  static absl::StatusOr<ZipArchive> Open(absl::string_view bytes, absl::string_view label) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
    if (source == nullptr) {
      std::string why = zip_error_strerror(&error);
      zip_error_fini(&error);
      return Invalid(label, absl::StrCat("cannot read the zip archive: ", why));
    }
    zip_t* archive = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
    if (archive == nullptr) {
      std::string why = zip_error_strerror(&error);
      zip_source_free(source);
      zip_error_fini(&error);
      return Invalid(label, absl::StrCat("not a valid zip archive: ", why));
    }
    zip_error_fini(&error);
    ZipArchive out;
    out.archive_.reset(archive);
    out.label_ = std::string(label);
    return out;
  }

  zip_int64_t Count() const { return zip_get_num_entries(archive_.get(), 0); }
  std::string Name(zip_uint64_t index) const {
    const char* name = zip_get_name(archive_.get(), index, ZIP_FL_ENC_RAW);
    return name ? name : "";
  }
  zip_int64_t Locate(const std::string& name) const { return zip_name_locate(archive_.get(), name.c_str(), ZIP_FL_ENC_RAW); }

  // Reads an entry into `out` (exactly `size` bytes). The declared size must equal `size` and the actual data
  // must fill it: a zip bomb or a truncated entry is an error, never a large allocation.
  absl::Status Read(zip_uint64_t index, void* out, std::uint64_t size) const {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive_.get(), index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      return Invalid(label_, absl::StrCat("cannot stat entry '", Name(index), "'"));
    }
    if (st.size != size) {
      return Invalid(label_, absl::StrCat("entry '", Name(index), "' declares ", st.size, " bytes, expected ", size));
    }
    std::unique_ptr<zip_file_t, ZipFileCloser> file(zip_fopen_index(archive_.get(), index, 0));
    if (file == nullptr) {
      return Invalid(label_, absl::StrCat("cannot open entry '", Name(index), "': ", zip_strerror(archive_.get())));
    }
    std::uint64_t done = 0;
    auto* dst = static_cast<char*>(out);
    while (done < size) {
      const zip_int64_t n = zip_fread(file.get(), dst + done, size - done);
      if (n <= 0) {
        return Invalid(label_, absl::StrCat("entry '", Name(index), "' ends after ", done, " of ", size,
                                            " bytes (or fails its CRC)"));
      }
      done += static_cast<std::uint64_t>(n);
    }
    char extra;
    if (zip_fread(file.get(), &extra, 1) > 0) {
      return Invalid(label_, absl::StrCat("entry '", Name(index), "' holds more than its declared ", size, " bytes"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::uint64_t> DeclaredSize(zip_uint64_t index) const {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive_.get(), index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      return Invalid(label_, absl::StrCat("cannot stat entry '", Name(index), "'"));
    }
    return st.size;
  }

 private:
  std::unique_ptr<zip_t, ZipCloser> archive_;
  std::string label_;
};

struct ZipContents {
  ZipArchive archive;
  std::string prefix;  // "archive" in "archive/data.pkl"
  Described described;
};

absl::StatusOr<ZipContents> DescribeZip(absl::string_view bytes, absl::string_view label) {
  auto archive = ZipArchive::Open(bytes, label);
  if (!archive.ok()) return archive.status();
  // Exactly one "<prefix>/data.pkl" at the top level (WebUI's safe.py rule).
  zip_int64_t pickle_index = -1;
  std::string prefix;
  for (zip_int64_t i = 0; i < archive->Count(); ++i) {
    const std::string name = archive->Name(static_cast<zip_uint64_t>(i));
    const auto slash = name.find('/');
    if (slash == std::string::npos || name.substr(slash) != "/data.pkl") continue;
    if (pickle_index >= 0) return Invalid(label, "the archive holds more than one data.pkl");
    pickle_index = i;
    prefix = name.substr(0, slash);
  }
  if (pickle_index < 0) return Invalid(label, "a zip file without <name>/data.pkl is not a PyTorch checkpoint");
  if (const zip_int64_t order = archive->Locate(prefix + "/byteorder"); order >= 0) {
    char text[8] = {0};
    auto size = archive->DeclaredSize(static_cast<zip_uint64_t>(order));
    if (size.ok() && *size <= sizeof(text) && archive->Read(static_cast<zip_uint64_t>(order), text, *size).ok() &&
        std::string(text, *size) != "little") {
      return Invalid(label, absl::StrCat("byte order '", std::string(text, *size), "' is not supported"));
    }
  }
  auto pickle_size = archive->DeclaredSize(static_cast<zip_uint64_t>(pickle_index));
  if (!pickle_size.ok()) return pickle_size.status();
  if (*pickle_size > kMaxPickleBytes) {
    return Invalid(label, absl::StrCat("data.pkl declares ", *pickle_size, " bytes (limit ", kMaxPickleBytes, ")"));
  }
  std::string pickle_bytes(static_cast<std::size_t>(*pickle_size), '\0');
  if (auto s = archive->Read(static_cast<zip_uint64_t>(pickle_index), pickle_bytes.data(), *pickle_size); !s.ok()) {
    return s;
  }
  ZipContents contents{*std::move(archive), prefix, {}};
  const std::string pickle_label = absl::StrCat(label, ":", prefix, "/data.pkl");
  auto root = pickle::Unpickle(pickle_bytes, pickle_label, [&](const pickle::Value& pid) {
    return ResolveStorage(pid, 5, contents.described, label);
  });
  if (!root.ok()) return root.status();
  if (auto s = ExtractStateDict(*root, contents.described, label); !s.ok()) return s;
  return contents;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadZipStorages(const ZipContents& zip, absl::string_view label) {
  std::map<std::string, at::Tensor> storages;
  std::set<std::string> used;
  for (const auto& [name, ref] : zip.described.tensors) used.insert(ref->storage->key);
  for (const std::string& key : used) {
    const auto& ref = zip.described.storages.at(key);
    const std::string entry = absl::StrCat(zip.prefix, "/data/", key);
    const zip_int64_t index = zip.archive.Locate(entry);
    if (index < 0) return Invalid(label, absl::StrCat("storage entry '", entry, "' is missing"));
    std::uint64_t bytes;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(ref->numel), DTypeSize(ref->dtype), &bytes)) {
      return Invalid(label, absl::StrCat("storage '", key, "' size overflows"));
    }
    auto declared = zip.archive.DeclaredSize(static_cast<zip_uint64_t>(index));
    if (!declared.ok()) return declared.status();
    if (*declared != bytes) {  // checked before allocating
      return Invalid(label, absl::StrCat("storage entry '", entry, "' declares ", *declared, " bytes; its ",
                                         ref->numel, " ", DTypeName(ref->dtype), " elements need ", bytes));
    }
    at::Tensor storage = at::empty({ref->numel}, at::TensorOptions().dtype(ToScalarType(ref->dtype)));
    if (auto s = zip.archive.Read(static_cast<zip_uint64_t>(index), storage.data_ptr(), bytes); !s.ok()) return s;
    storages[key] = storage;
  }
  return storages;
}

// ---- legacy format ----

constexpr unsigned char kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};  // LE bytes

struct LegacyContents {
  Described described;
  std::size_t storages_offset = 0;  // where the storage key list pickle starts
};

absl::StatusOr<LegacyContents> DescribeLegacy(absl::string_view bytes, absl::string_view label) {
  std::size_t pos = 0, used = 0;
  const pickle::PersistentLoader none;
  auto magic = pickle::Unpickle(bytes, label, none, &used);
  if (!magic.ok()) return magic.status();
  if ((*magic)->kind != Kind::kBigInt ||
      (*magic)->text != std::string(reinterpret_cast<const char*>(kLegacyMagic), sizeof(kLegacyMagic))) {
    return Invalid(label, "not a PyTorch legacy checkpoint (bad magic number)");
  }
  pos += used;
  auto protocol = pickle::Unpickle(bytes.substr(pos), label, none, &used);
  if (!protocol.ok()) return protocol.status();
  if ((*protocol)->kind != Kind::kInt || (*protocol)->integer != 1001) {
    return Invalid(label, absl::StrCat("legacy protocol ", pickle::Describe(**protocol), " is not supported (1001 is)"));
  }
  pos += used;
  auto sys_info = pickle::Unpickle(bytes.substr(pos), label, none, &used);
  if (!sys_info.ok()) return sys_info.status();
  if (const pickle::Value* little = (*sys_info)->Get("little_endian");
      little != nullptr && little->kind == Kind::kBool && !little->boolean) {
    return Invalid(label, "big-endian legacy checkpoints are not supported");
  }
  pos += used;
  LegacyContents contents;
  auto root = pickle::Unpickle(bytes.substr(pos), label, [&](const pickle::Value& pid) {
    return ResolveStorage(pid, 6, contents.described, label);
  }, &used);
  if (!root.ok()) return root.status();
  pos += used;
  if (auto s = ExtractStateDict(*root, contents.described, label); !s.ok()) return s;
  contents.storages_offset = pos;
  return contents;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadLegacyStorages(absl::string_view bytes,
                                                                      const LegacyContents& contents,
                                                                      absl::string_view label) {
  std::size_t pos = contents.storages_offset, used = 0;
  auto keys = pickle::Unpickle(bytes.substr(pos), label, pickle::PersistentLoader(), &used);
  if (!keys.ok()) return keys.status();
  if ((*keys)->kind != Kind::kList) return Invalid(label, "the storage key list is missing");
  pos += used;
  std::map<std::string, at::Tensor> storages;
  for (const pickle::Value* key : (*keys)->items) {
    if (key->kind != Kind::kString) return Invalid(label, "storage keys must be strings");
    const auto it = contents.described.storages.find(key->text);
    if (it == contents.described.storages.end()) {
      return Invalid(label, absl::StrCat("storage '", key->text, "' has data but no tensor uses it"));
    }
    const pickle::StorageRef& ref = *it->second;
    if (bytes.size() - pos < 8) return Invalid(label, absl::StrCat("file ends before storage '", ref.key, "'"));
    std::uint64_t numel = 0;
    for (int i = 7; i >= 0; --i) numel = (numel << 8) | static_cast<unsigned char>(bytes[pos + static_cast<std::size_t>(i)]);
    pos += 8;
    if (numel != static_cast<std::uint64_t>(ref.numel)) {
      return Invalid(label, absl::StrCat("storage '", ref.key, "' holds ", numel, " elements, the pickle says ",
                                         ref.numel));
    }
    std::uint64_t size;
    if (__builtin_mul_overflow(numel, DTypeSize(ref.dtype), &size) || size > bytes.size() - pos) {
      return Invalid(label, absl::StrCat("storage '", ref.key, "' runs past the end of the file"));
    }
    at::Tensor storage = at::empty({ref.numel}, at::TensorOptions().dtype(ToScalarType(ref.dtype)));
    std::memcpy(storage.data_ptr(), bytes.data() + pos, static_cast<std::size_t>(size));
    pos += static_cast<std::size_t>(size);
    storages[ref.key] = storage;
  }
  return storages;
}

absl::StatusOr<TensorSet> Assemble(const Described& described,
                                   const std::map<std::string, at::Tensor>& storages, const char* format,
                                   absl::string_view label) {
  TensorSet set;
  set.format = format;
  for (const auto& [name, ref] : described.tensors) {
    const auto it = storages.find(ref->storage->key);
    if (it == storages.end()) return Invalid(label, absl::StrCat("tensor '", name, "' has no storage data"));
    auto tensor = Materialize(name, *ref, it->second, label);
    if (!tensor.ok()) return tensor.status();
    set.tensors.emplace_back(name, *std::move(tensor));
  }
  return set;
}

}  // namespace

bool LooksLikeZip(absl::string_view bytes) { return absl::StartsWith(bytes, absl::string_view("PK\x03\x04", 4)); }

bool LooksLikeLegacyPickle(absl::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x80;
}

absl::StatusOr<TensorIndex> ReadTorchIndex(absl::string_view bytes, absl::string_view label) {
  if (LooksLikeZip(bytes)) {
    auto zip = DescribeZip(bytes, label);
    if (!zip.ok()) return zip.status();
    return ToIndex(zip->described, "zip pickle");
  }
  auto legacy = DescribeLegacy(bytes, label);
  if (!legacy.ok()) return legacy.status();
  return ToIndex(legacy->described, "legacy pickle");
}

absl::StatusOr<TensorSet> ReadTorchTensors(absl::string_view bytes, absl::string_view label) {
  if (LooksLikeZip(bytes)) {
    auto zip = DescribeZip(bytes, label);
    if (!zip.ok()) return zip.status();
    auto storages = ReadZipStorages(*zip, label);
    if (!storages.ok()) return storages.status();
    return Assemble(zip->described, *storages, "zip pickle", label);
  }
  auto legacy = DescribeLegacy(bytes, label);
  if (!legacy.ok()) return legacy.status();
  auto storages = ReadLegacyStorages(bytes, *legacy, label);
  if (!storages.ok()) return storages.status();
  return Assemble(legacy->described, *storages, "legacy pickle", label);
}

}  // namespace atelier::engine
