// The SIMT portability layer: our CUDA kernels are written once against it and compiled
//   - by nvcc for the GPU (the names below are CUDA's own), and
//   - by a host compiler for the emulated device (simt_emulator.h), where every thread block
//     runs as blockDim real CPU threads, so the very same kernels and launch code execute in
//     CI, under the test-suite and under ThreadSanitizer / AddressSanitizer.
//
// Kernels use CUDA's spellings: __global__, __device__, threadIdx / blockIdx / blockDim /
// gridDim, __syncthreads(), static __shared__ arrays, __shfl_*_sync, atomicAdd. Two things
// need this layer's spelling because plain C++ has no equivalent syntax:
//   DINAT_M2F_DYNAMIC_SHARED(T, name);          extern __shared__ T name[] (dynamic smem)
//   simt::launch(kernel, grid, block, smem, stream, args...)   kernel<<<...>>>(args...)
// Device code lives in namespace DINAT_M2F_SIMT_NS (`cuda` or `emulated`), so both builds can
// be linked into one library. This header needs no ATen (simt_torch.h has the glue).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "host_device.h"

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#define DINAT_M2F_SIMT_NS cuda
#define DINAT_M2F_DEVICE __device__ __forceinline__
#define DINAT_M2F_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]

namespace dinat_m2f {
namespace simt {

using Stream = cudaStream_t;

// kernel<<<grid, block, smem, stream>>>(args...), with launch errors raised as exceptions.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, Stream stream, Args... args) {
  kernel<<<grid, block, smem, stream>>>(args...);
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess)
    throw std::runtime_error(std::string("CUDA kernel launch failed: ") +
                             cudaGetErrorString(error));
}

}  // namespace simt
}  // namespace dinat_m2f

#else

#include "simt_emulator.h"

#define DINAT_M2F_SIMT_NS emulated
#define DINAT_M2F_DEVICE inline

#endif

namespace dinat_m2f {
namespace simt {

constexpr int kWarpSize = 32;

// The accumulation type of a kernel's element type: itself, except float for the half
// types (specialised in simt_torch.h, which knows them).
template <typename T>
struct Accumulate {
  using type = T;
};
template <typename T>
using acc_t = typename Accumulate<T>::type;

}  // namespace simt
}  // namespace dinat_m2f
