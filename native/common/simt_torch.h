// Glue between ATen tensors and the SIMT device code (simt.h), for the GPU build and the
// emulated device alike: the accumulation type of the half types, and the device scope of a
// call (CUDA: the tensor's device made current and its current stream; emulated: nothing).
// Include it before any device header, so ATen's headers come before the emulator's macros.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__CUDACC__)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "simt.h"

namespace dinat_m2f {
namespace simt {

template <>
struct Accumulate<c10::Half> {
  using type = float;
};
template <>
struct Accumulate<c10::BFloat16> {
  using type = float;
};

#if defined(__CUDACC__)
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor& t)
      : guard_(t.device()), stream_(c10::cuda::getCurrentCUDAStream(t.device().index())) {}
  Stream stream() const { return stream_; }

 private:
  c10::cuda::CUDAGuard guard_;
  Stream stream_;
};
#else
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor&) {}
  Stream stream() const { return nullptr; }
};
#endif

}  // namespace simt
}  // namespace dinat_m2f
