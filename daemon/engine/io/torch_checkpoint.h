// PyTorch pickle checkpoints (torch.save): the zip format ("<prefix>/data.pkl" + "<prefix>/data/<key>") and the
// legacy pre-1.6 format (five pickles and raw storages in one stream). Read with the non-executing walker.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/io/tensor_set.h"

namespace atelier::engine {

// Whether `bytes` starts like a zip archive / a legacy torch pickle.
bool LooksLikeZip(absl::string_view bytes);
bool LooksLikeLegacyPickle(absl::string_view bytes);

// `bytes` is the whole file; `label` names it in errors.
absl::StatusOr<TensorIndex> ReadTorchIndex(absl::string_view bytes, absl::string_view label);
absl::StatusOr<TensorSet> ReadTorchTensors(absl::string_view bytes, absl::string_view label);

}  // namespace atelier::engine
