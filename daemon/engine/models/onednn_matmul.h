// Matrix products through oneDNN (Debian's libdnnl, the library libtorch itself calls), for the shapes libtorch
// cannot express: bfloat16 inputs with a float32 result (attention scores kept exact before the softmax), a scale
// folded into the product, and K=40/80 attention products that OpenBLAS runs at a third of its peak. oneDNN picks
// AMX, AVX512_BF16 or AVX-512 kernels at run time.
#pragma once

#include <ATen/ATen.h>

namespace atelier::engine {

// Whether this build has oneDNN (ATELIER_HAVE_ONEDNN).
bool OneDnnAvailable();

// out = scale * a @ b for 2-D CPU tensors a [M, K] and b [K, N] of the same dtype (float32 or bfloat16, any
// strides) into `out` [M, N] (float32 or a's dtype, any strides; overwritten), accumulating in float32. Primitives
// are made once per shape and reused. Returns false (and leaves `out` alone) when oneDNN is not built in or cannot
// run these types here; the caller then uses libtorch.
bool OneDnnMatmul(const at::Tensor& a, const at::Tensor& b, at::Tensor& out, float scale = 1.0f);

// out = softmax(scores) over the last dim for float32 `scores` [M, N] (dense rows) into `out` [M, N] (float32, may be
// `scores` itself, or bfloat16: the probabilities rounded once, as the next product takes them). oneDNN's AVX-512
// softmax; false (nothing written) where it cannot run.
bool OneDnnSoftmax(const at::Tensor& scores, at::Tensor& out);

}  // namespace atelier::engine
