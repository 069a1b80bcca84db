// Test-only copies of our kernels, each with one bug planted, for proving that the sanitizer
// builds of the emulated device catch what a GPU would expose. Never compiled into the
// extension; only the sanitizer driver (driver.cpp) launches them.
#pragma once

#include "../../common/simt.h"
#include "../../na/na_device.cuh"

namespace dinat_m2f {
namespace planted {

using na::Problem;
using na::TokenCoords;
using na::emulated::kThreads;

// na_device.cuh's rpb_grad_kernel with the barrier between writing the per-thread partial
// sums and the tree reduction removed: threads read partial[] entries that other threads may
// not have written yet (a data race, reported by ThreadSanitizer).
template <typename T>
__global__ void rpb_grad_without_barrier(const T* __restrict__ grad_attn, T* __restrict__ grad_rpb,
                                         Problem p) {
  using Acc = simt::acc_t<T>;
  __shared__ Acc partial[kThreads];
  const int K = p.neighbors();
  const int rows = 2 * p.h.kernel - 1, cols = 2 * p.w.kernel - 1;
  const int head = blockIdx.x / (rows * cols);
  const int row = (blockIdx.x / cols) % rows, col = blockIdx.x % cols;
  Acc sum = Acc(0);
  for (int64_t t = threadIdx.x; t < p.tokens(); t += blockDim.x) {
    const TokenCoords tc = na::coords_of(t, p);
    const int i = row - na::window_of(tc.h, p.h).bias_first;
    const int j = col - na::window_of(tc.w, p.w).bias_first;
    if (i >= 0 && i < p.h.kernel && j >= 0 && j < p.w.kernel)
      sum += Acc(grad_attn[(t * p.heads + head) * K + i * p.w.kernel + j]);
  }
  partial[threadIdx.x] = sum;
  // PLANTED BUG: __syncthreads() removed here
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_rpb[blockIdx.x] = T(partial[0]);
}

// na_tiled.h's stage_box (staging a box of key rows into dynamic shared memory) with an
// off-by-one bound: the last thread's write lands one element past the launch's shared
// memory (a heap-buffer-overflow on the emulated device, reported by AddressSanitizer).
template <typename T>
__global__ void stage_rows_past_shared(const T* __restrict__ src, T* __restrict__ out, int rows,
                                       int count) {
  DINAT_M2F_DYNAMIC_SHARED(T, box);
  const int entries = rows * count;
  // PLANTED BUG: `<=` instead of `<` (the launch gives entries * sizeof(T) bytes)
  for (int e = threadIdx.x; e <= entries; e += blockDim.x) box[e] = src[e % entries];
  __syncthreads();
  for (int e = threadIdx.x; e < entries; e += blockDim.x) out[e] = box[e];
}

// na_device.cuh's qk_naive_kernel with an off-by-one head-dim loop: the dot product reads
// one element past each key row, which for the last (token, head) is past the end of `key`
// (a heap-buffer-overflow in global memory, reported by AddressSanitizer).
template <typename T>
__global__ void qk_reading_past_key(const T* __restrict__ query, const T* __restrict__ key,
                                    T* __restrict__ attn, Problem p) {
  using Acc = simt::acc_t<T>;
  const int K = p.neighbors();
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < p.tokens() * p.heads * K;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(e % K);
    const int head = int((e / K) % p.heads);
    const int64_t t = e / (int64_t(K) * p.heads);
    const TokenCoords tc = na::coords_of(t, p);
    const na::Window wh = na::window_of(tc.h, p.h), ww = na::window_of(tc.w, p.w);
    const int i = n / p.w.kernel, j = n % p.w.kernel;
    const int64_t s = na::token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
    const T* qp = query + (t * p.heads + head) * p.dim;
    const T* kp = key + (s * p.heads + head) * p.dim;
    Acc sum = Acc(0);
    // PLANTED BUG: `<=` instead of `<`
    for (int d = 0; d <= p.dim; ++d) sum += Acc(qp[d < p.dim ? d : 0]) * Acc(kp[d]);
    attn[e] = T(sum);
  }
}

}  // namespace planted
}  // namespace dinat_m2f
