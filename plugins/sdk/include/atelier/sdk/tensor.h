// Plugin SDK: DLPack <-> at::Tensor without copies, for plugins (and the host) that use libtorch.
//
// The ABI itself is C (atelier/plugin.h). These helpers only wrap the ways a tensor crosses it:
//  - View():   a borrowed `const DLTensor*` input -> at::Tensor sharing its memory, valid during the call only;
//  - Export(): an at::Tensor -> `DLManagedTensor*` the receiver owns (it keeps the storage alive until the
//              receiver calls the deleter, exactly once);
//  - Adopt():  a received `DLManagedTensor*` -> at::Tensor that owns it (the deleter runs once, when the last
//              at::Tensor sharing the storage is gone).
//  - Borrow:   an at::Tensor -> `const DLTensor*` to pass as a borrowed input.
// Works with Debian's libtorch 1.13 (DLPack 0.6) and libtorch 2.x.
#pragma once

// ATen's DLConvertor pulls in ATen's own dlpack.h; it must come before atelier/plugin.h (same include guard).
#include <ATen/ATen.h>
#include <ATen/DLConvertor.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "atelier/plugin.h"

namespace atelier::sdk {

// at::Device of a DLPack device; throws std::invalid_argument for devices the host never uses.
inline at::Device DeviceOf(const DLDevice& device) {
  switch (device.device_type) {
    case kDLCPU:
      return at::Device(at::kCPU);
    case kDLCUDA:
      return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device.device_id));
    default:
      throw std::invalid_argument("DLPack device type " + std::to_string(static_cast<int>(device.device_type)) +
                                  " is not supported (CPU and CUDA are)");
  }
}

// A tensor sharing `t`'s memory without taking ownership. Valid only while `t` is (during the hook call); clone()
// what must outlive it.
inline at::Tensor View(const DLTensor* t) {
  if (t == nullptr) throw std::invalid_argument("null DLTensor");
  std::vector<int64_t> sizes(t->shape, t->shape + t->ndim);
  auto options = at::TensorOptions().dtype(at::toScalarType(t->dtype)).device(DeviceOf(t->device));
  void* data = static_cast<char*>(t->data) + t->byte_offset;
  if (t->strides == nullptr) return at::from_blob(data, sizes, options);
  std::vector<int64_t> strides(t->strides, t->strides + t->ndim);
  return at::from_blob(data, sizes, strides, options);
}

// Hands `t` across the ABI; the receiver owns the result and calls its deleter exactly once.
inline DLManagedTensor* Export(const at::Tensor& t) { return at::toDLPack(t); }

// Takes ownership of `t` (its deleter runs when the returned tensor's storage is released). Null gives an
// undefined tensor.
inline at::Tensor Adopt(DLManagedTensor* t) {
  if (t == nullptr) return at::Tensor();
  return at::fromDLPack(t);
}

// A borrowed DLTensor describing an at::Tensor, for passing inputs. Keeps the tensor alive as long as it lives.
class Borrow {
 public:
  explicit Borrow(at::Tensor t) : tensor_(std::move(t)) {
    if (!tensor_.defined()) return;
    shape_.assign(tensor_.sizes().begin(), tensor_.sizes().end());
    strides_.assign(tensor_.strides().begin(), tensor_.strides().end());
    managed_ = at::toDLPack(tensor_);  // only for the dtype/device translation
    dl_ = managed_->dl_tensor;
    dl_.shape = shape_.data();
    dl_.strides = strides_.data();
  }
  ~Borrow() {
    if (managed_ != nullptr && managed_->deleter != nullptr) managed_->deleter(managed_);
  }
  Borrow(const Borrow&) = delete;
  Borrow& operator=(const Borrow&) = delete;

  // nullptr for an undefined tensor.
  const DLTensor* get() const { return tensor_.defined() ? &dl_ : nullptr; }

 private:
  at::Tensor tensor_;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  DLManagedTensor* managed_ = nullptr;
  DLTensor dl_{};
};

}  // namespace atelier::sdk
