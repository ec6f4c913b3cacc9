/* Shared bits of the probing test plugins: float32 CPU tensors they own (handed to the host, which calls the
 * deleter once) and strided reads of the tensors they borrow. */
#ifndef ATELIER_TESTS_PROBE_TENSORS_H_
#define ATELIER_TESTS_PROBE_TENSORS_H_

#include <atelier/plugin.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  DLManagedTensor managed;
  int64_t shape[8];
  float data[];
} probe_tensor;

static void probe_tensor_delete(DLManagedTensor* self) { free(self->manager_ctx); }

/* A new zeroed float32 CPU tensor of `shape`, or NULL when out of memory. */
__attribute__((unused)) static DLManagedTensor* new_tensor(const int64_t* shape, int ndim) {
  int64_t count = 1;
  for (int i = 0; i < ndim; ++i) count *= shape[i];
  probe_tensor* t = (probe_tensor*)calloc(1, sizeof(probe_tensor) + (size_t)count * sizeof(float));
  if (t == NULL) return NULL;
  memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
  t->managed.dl_tensor.data = t->data;
  t->managed.dl_tensor.device.device_type = kDLCPU;
  t->managed.dl_tensor.ndim = ndim;
  t->managed.dl_tensor.dtype.code = kDLFloat;
  t->managed.dl_tensor.dtype.bits = 32;
  t->managed.dl_tensor.dtype.lanes = 1;
  t->managed.dl_tensor.shape = t->shape;
  t->managed.manager_ctx = t;
  t->managed.deleter = probe_tensor_delete;
  return &t->managed;
}

__attribute__((unused)) static int64_t numel(const DLTensor* t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}

/* Element `flat` (row-major order) of a float32 tensor, honouring strides. */
__attribute__((unused)) static float read_at(const DLTensor* t, int64_t flat) {
  const float* base = (const float*)((const char*)t->data + t->byte_offset);
  int64_t offset = 0, stride = 1;
  for (int d = t->ndim - 1; d >= 0; --d) {
    const int64_t index = flat % t->shape[d];
    flat /= t->shape[d];
    offset += index * (t->strides ? t->strides[d] : stride);
    stride *= t->shape[d];
  }
  return base[offset];
}

/* A new tensor shaped like `in` with out = in * scale + add (NULL when out of memory). */
__attribute__((unused)) static DLManagedTensor* affine(const DLTensor* in, float scale, float add) {
  DLManagedTensor* out = new_tensor(in->shape, in->ndim);
  if (out == NULL) return NULL;
  float* data = (float*)out->dl_tensor.data;
  const int64_t n = numel(in);
  for (int64_t i = 0; i < n; ++i) data[i] = read_at(in, i) * scale + add;
  return out;
}

#endif /* ATELIER_TESTS_PROBE_TENSORS_H_ */
