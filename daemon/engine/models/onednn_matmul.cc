#include "engine/models/onednn_matmul.h"

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#ifdef ATELIER_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace atelier::engine {

#ifdef ATELIER_HAVE_ONEDNN
namespace {

using Dims = std::vector<std::int64_t>;

dnnl::memory::data_type DnnlType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return dnnl::memory::data_type::f32;
    case at::kBFloat16: return dnnl::memory::data_type::bf16;
    default: return dnnl::memory::data_type::undef;
  }
}

dnnl::engine& CpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A primitive per (shapes, strides, types, scale): creating one JIT-compiles kernels (milliseconds); executing a
// cached one costs microseconds.
using Key = std::tuple<Dims, Dims, Dims, Dims, Dims, Dims, int, int, float>;
struct Cached {
  dnnl::matmul primitive;
  dnnl::memory::desc a, b, out;
};

const Cached* Primitive(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, float scale) {
  static std::mutex mu;
  static std::map<Key, Cached> cache;
  const Key key{Dims(a.sizes().begin(), a.sizes().end()),     Dims(a.strides().begin(), a.strides().end()),
                Dims(b.sizes().begin(), b.sizes().end()),     Dims(b.strides().begin(), b.strides().end()),
                Dims(out.sizes().begin(), out.sizes().end()), Dims(out.strides().begin(), out.strides().end()),
                static_cast<int>(a.scalar_type()),            static_cast<int>(out.scalar_type()),
                scale};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return &it->second;
  try {
    const auto in_type = DnnlType(a.scalar_type());
    const dnnl::memory::desc a_desc(std::get<0>(key), in_type, std::get<1>(key));
    const dnnl::memory::desc b_desc(std::get<2>(key), in_type, std::get<3>(key));
    const dnnl::memory::desc out_desc(std::get<4>(key), DnnlType(out.scalar_type()), std::get<5>(key));
    dnnl::primitive_attr attr;
    if (scale != 1.0f) attr.set_output_scales(0, {scale});
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_desc, b_desc, out_desc), attr, CpuEngine());
    return &cache.emplace(key, Cached{dnnl::matmul(pd), a_desc, b_desc, out_desc}).first->second;
  } catch (const dnnl::error&) {
    return nullptr;  // unsupported here (e.g. bf16 on a CPU without AVX-512): libtorch takes over
  }
}

struct CachedSoftmax {
  dnnl::softmax_v2_forward primitive;
  dnnl::memory::desc in, out;
};

const CachedSoftmax* SoftmaxPrimitive(const at::Tensor& in, const at::Tensor& out) {
  static std::mutex mu;
  static std::map<std::tuple<Dims, Dims, Dims, int>, CachedSoftmax> cache;
  const auto key = std::make_tuple(Dims(in.sizes().begin(), in.sizes().end()), Dims(in.strides().begin(), in.strides().end()),
                                   Dims(out.strides().begin(), out.strides().end()), static_cast<int>(out.scalar_type()));
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return &it->second;
  try {
    const dnnl::memory::desc in_desc(std::get<0>(key), dnnl::memory::data_type::f32, std::get<1>(key));
    const dnnl::memory::desc out_desc(std::get<0>(key), DnnlType(out.scalar_type()), std::get<2>(key));
    const dnnl::softmax_v2_forward::primitive_desc pd(
        dnnl::softmax_v2_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::softmax_accurate, in_desc,
                                       out_desc, 1),
        CpuEngine());
    return &cache.emplace(key, CachedSoftmax{dnnl::softmax_v2_forward(pd), in_desc, out_desc}).first->second;
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

}  // namespace

bool OneDnnAvailable() { return true; }

bool OneDnnSoftmax(const at::Tensor& scores, at::Tensor& out) {
  if (!scores.is_cpu() || scores.dim() != 2 || out.dim() != 2 || scores.scalar_type() != at::kFloat ||
      scores.sizes() != out.sizes() || scores.stride(1) != 1 || out.stride(1) != 1 ||
      (out.scalar_type() != at::kFloat && out.scalar_type() != at::kBFloat16)) {
    return false;
  }
  const CachedSoftmax* p = SoftmaxPrimitive(scores, out);
  if (p == nullptr) return false;
  dnnl::memory in_mem(p->in, CpuEngine(), scores.data_ptr());
  dnnl::memory out_mem(p->out, CpuEngine(), out.data_ptr());
  thread_local dnnl::stream stream(CpuEngine());
  p->primitive.execute(stream, {{DNNL_ARG_SRC, in_mem}, {DNNL_ARG_DST, out_mem}});
  stream.wait();
  return true;
}

bool OneDnnMatmul(const at::Tensor& a, const at::Tensor& b, at::Tensor& out, float scale) {
  if (!a.is_cpu() || a.dim() != 2 || b.dim() != 2 || out.dim() != 2 || a.scalar_type() != b.scalar_type() ||
      DnnlType(a.scalar_type()) == dnnl::memory::data_type::undef ||
      (out.scalar_type() != at::kFloat && out.scalar_type() != a.scalar_type()) || a.size(1) != b.size(0) ||
      out.size(0) != a.size(0) || out.size(1) != b.size(1)) {
    return false;
  }
  const Cached* p = Primitive(a, b, out, scale);
  if (p == nullptr) return false;
  dnnl::memory a_mem(p->a, CpuEngine(), a.data_ptr());
  dnnl::memory b_mem(p->b, CpuEngine(), b.data_ptr());
  dnnl::memory out_mem(p->out, CpuEngine(), out.data_ptr());
  thread_local dnnl::stream stream(CpuEngine());
  p->primitive.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, out_mem}});
  stream.wait();
  return true;
}

#else

bool OneDnnAvailable() { return false; }
bool OneDnnMatmul(const at::Tensor&, const at::Tensor&, at::Tensor&, float) { return false; }
bool OneDnnSoftmax(const at::Tensor&, at::Tensor&) { return false; }

#endif

}  // namespace atelier::engine
