// Device code of the NA ops, written once against the SIMT layer (common/simt.h): compiled
// by nvcc for the GPU (na_cuda.cu) and by the host compiler for the emulated device
// (native/testing/emulated_device.cpp, and the sanitizer builds of native/testing/sanitizer/).
// No ATen here: the launchers take raw pointers, so the sanitizer driver calls them as they are.
//
// Naive kernels (one thread per output element, grid-stride loops) cover every op, dtype,
// kernel size and head dim. The 2D QK and AV kernels for DiNAT's sizes (kernel 3..13, head
// dim 32 or 64) use the shared-memory tiled block programs of na_tiled.h, with the tile the
// planner picks. Accumulation is in simt::acc_t (fp32 for fp16/bf16).
//
// Launchers (host code, the same in both builds: they choose grid, block and shared memory):
//   launch_qk(query, key, rpb, attn, p, stream)       attn = <query, neighbor key> (+ rpb)
//   launch_av(attn, value, out, p, stream)            out = sum_n attn * neighbor value
//   launch_inverse(weights, source, out, p, stream)   the transpose of av
//   launch_rpb_grad(grad_attn, grad_rpb, p, stream)   grad_attn summed per bias entry
//   launch_{qk,av}_tiled(..., plan, stream)           a tiled kernel with a given plan
// Tensors are contiguous (batch, height, width, heads, n) as in na_ops.h; rpb may be null.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/simt.h"
#include "na_index.h"
#include "na_tiled.h"

namespace dinat_m2f {
namespace na {
namespace DINAT_M2F_SIMT_NS {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

inline unsigned int blocks_for(int64_t elements) {
  return unsigned(std::min<int64_t>(kMaxBlocks, (elements + kThreads - 1) / kThreads));
}

#define NA_GRID_STRIDE(index, total)                                                    \
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < (total); \
       index += int64_t(gridDim.x) * blockDim.x)

// One thread per logit (token, head, neighbor).
template <typename T>
__global__ void qk_naive_kernel(const T* __restrict__ query, const T* __restrict__ key,
                                const T* __restrict__ rpb, T* __restrict__ attn, Problem p) {
  using Acc = simt::acc_t<T>;
  const int K = p.neighbors();
  const int bias_w = 2 * p.w.kernel - 1, bias_hw = (2 * p.h.kernel - 1) * bias_w;
  NA_GRID_STRIDE(e, p.tokens() * p.heads * K) {
    const int n = int(e % K);
    const int head = int((e / K) % p.heads);
    const int64_t t = e / (int64_t(K) * p.heads);
    const TokenCoords tc = coords_of(t, p);
    const Window wh = window_of(tc.h, p.h), ww = window_of(tc.w, p.w);
    const int i = n / p.w.kernel, j = n % p.w.kernel;
    const int64_t s = token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
    const T* qp = query + (t * p.heads + head) * p.dim;
    const T* kp = key + (s * p.heads + head) * p.dim;
    Acc sum = Acc(0);
    for (int d = 0; d < p.dim; ++d) sum += Acc(qp[d]) * Acc(kp[d]);
    if (rpb != nullptr)
      sum += Acc(rpb[head * bias_hw + (wh.bias_first + i) * bias_w + ww.bias_first + j]);
    attn[e] = T(sum);
  }
}

// One thread per output channel (token, head, channel).
template <typename T>
__global__ void av_naive_kernel(const T* __restrict__ attn, const T* __restrict__ value,
                                T* __restrict__ out, Problem p) {
  using Acc = simt::acc_t<T>;
  const int K = p.neighbors();
  NA_GRID_STRIDE(e, p.tokens() * p.heads * p.dim) {
    const int d = int(e % p.dim);
    const int head = int((e / p.dim) % p.heads);
    const int64_t t = e / (int64_t(p.dim) * p.heads);
    const TokenCoords tc = coords_of(t, p);
    const Window wh = window_of(tc.h, p.h), ww = window_of(tc.w, p.w);
    const T* a = attn + (t * p.heads + head) * K;
    Acc sum = Acc(0);
    for (int i = 0; i < p.h.kernel; ++i) {
      for (int j = 0; j < p.w.kernel; ++j) {
        const int64_t s = token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
        sum += Acc(a[i * p.w.kernel + j]) * Acc(value[(s * p.heads + head) * p.dim + d]);
      }
    }
    out[e] = T(sum);
  }
}

// One thread per output channel of a key: gathers from the queries whose window holds it.
template <typename T>
__global__ void inverse_naive_kernel(const T* __restrict__ weights, const T* __restrict__ source,
                                     T* __restrict__ out, Problem p) {
  using Acc = simt::acc_t<T>;
  const int K = p.neighbors();
  NA_GRID_STRIDE(e, p.tokens() * p.heads * p.dim) {
    const int d = int(e % p.dim);
    const int head = int((e / p.dim) % p.heads);
    const int64_t s = e / (int64_t(p.dim) * p.heads);
    const TokenCoords sc = coords_of(s, p);
    Acc sum = Acc(0);
    for_each_query_of_key(sc.h, sc.w, p, [&](int qh, int qw, int slot) {
      const int64_t t = token_of(sc.batch, qh, qw, p);
      sum += Acc(weights[(t * p.heads + head) * K + slot]) *
             Acc(source[(t * p.heads + head) * p.dim + d]);
    });
    out[e] = T(sum);
  }
}

// One block per bias entry (head, row, col), reducing over all tokens.
template <typename T>
__global__ void rpb_grad_kernel(const T* __restrict__ grad_attn, T* __restrict__ grad_rpb,
                                Problem p) {
  using Acc = simt::acc_t<T>;
  __shared__ Acc partial[kThreads];
  const int K = p.neighbors();
  const int rows = 2 * p.h.kernel - 1, cols = 2 * p.w.kernel - 1;
  const int head = blockIdx.x / (rows * cols);
  const int row = (blockIdx.x / cols) % rows, col = blockIdx.x % cols;
  Acc sum = Acc(0);
  for (int64_t t = threadIdx.x; t < p.tokens(); t += blockDim.x) {
    const TokenCoords tc = coords_of(t, p);
    const int i = row - window_of(tc.h, p.h).bias_first;
    const int j = col - window_of(tc.w, p.w).bias_first;
    if (i >= 0 && i < p.h.kernel && j >= 0 && j < p.w.kernel)
      sum += Acc(grad_attn[(t * p.heads + head) * K + i * p.w.kernel + j]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_rpb[blockIdx.x] = T(partial[0]);
}

template <typename T>
__global__ void qk_tiled_kernel(const T* query, const T* key, const T* rpb, T* attn, Problem p,
                                int tile, int chunk) {
  using Acc = simt::acc_t<T>;
  DINAT_M2F_DYNAMIC_SHARED(unsigned char, smem_bytes);
  tiled::Tile t;
  if (!tiled::locate_tile(blockIdx.x, p, tile, &t)) return;
  tiled::qk_tile_program(p, t, tile, chunk, query, key, rpb, attn,
                         reinterpret_cast<Acc*>(smem_bytes));
}

template <typename T>
__global__ void av_tiled_kernel(const T* attn, const T* value, T* out, Problem p, int tile,
                                int chunk) {
  using Acc = simt::acc_t<T>;
  DINAT_M2F_DYNAMIC_SHARED(unsigned char, smem_bytes);
  tiled::Tile t;
  if (!tiled::locate_tile(blockIdx.x, p, tile, &t)) return;
  tiled::av_tile_program(p, t, tile, chunk, attn, value, out, reinterpret_cast<Acc*>(smem_bytes));
}

// ------------------------------------------------------------------------------------------
// Launchers.

// The tile plans the launches use (nothing to tile when plan.use is false).
template <typename T>
tiled::TilePlan qk_plan(const Problem& p) {
  return tiled::plan_tiles(p, sizeof(simt::acc_t<T>), tiled::qk_smem_elems);
}
template <typename T>
tiled::TilePlan av_plan(const Problem& p) {
  return tiled::plan_tiles(p, sizeof(simt::acc_t<T>), tiled::av_smem_elems);
}

template <typename T>
void launch_qk_tiled(const T* query, const T* key, const T* rpb, T* attn, const Problem& p,
                     const tiled::TilePlan& plan, simt::Stream stream) {
  simt::launch(qk_tiled_kernel<T>, dim3(unsigned(tiled::num_blocks(p, plan.tile))), dim3(kThreads),
               size_t(plan.smem_bytes), stream, query, key, rpb, attn, p, plan.tile, plan.chunk);
}

template <typename T>
void launch_av_tiled(const T* attn, const T* value, T* out, const Problem& p,
                     const tiled::TilePlan& plan, simt::Stream stream) {
  simt::launch(av_tiled_kernel<T>, dim3(unsigned(tiled::num_blocks(p, plan.tile))), dim3(kThreads),
               size_t(plan.smem_bytes), stream, attn, value, out, p, plan.tile, plan.chunk);
}

template <typename T>
void launch_qk(const T* query, const T* key, const T* rpb, T* attn, const Problem& p,
               simt::Stream stream) {
  const int64_t total = p.tokens() * p.heads * p.neighbors();
  if (total == 0) return;
  const tiled::TilePlan plan = qk_plan<T>(p);
  if (plan.use) return launch_qk_tiled(query, key, rpb, attn, p, plan, stream);
  simt::launch(qk_naive_kernel<T>, dim3(blocks_for(total)), dim3(kThreads), 0, stream, query, key,
               rpb, attn, p);
}

template <typename T>
void launch_av(const T* attn, const T* value, T* out, const Problem& p, simt::Stream stream) {
  const int64_t total = p.tokens() * p.heads * p.dim;
  if (total == 0) return;
  const tiled::TilePlan plan = av_plan<T>(p);
  if (plan.use) return launch_av_tiled(attn, value, out, p, plan, stream);
  simt::launch(av_naive_kernel<T>, dim3(blocks_for(total)), dim3(kThreads), 0, stream, attn, value,
               out, p);
}

template <typename T>
void launch_inverse(const T* weights, const T* source, T* out, const Problem& p,
                    simt::Stream stream) {
  const int64_t total = p.tokens() * p.heads * p.dim;
  if (total == 0) return;
  simt::launch(inverse_naive_kernel<T>, dim3(blocks_for(total)), dim3(kThreads), 0, stream, weights,
               source, out, p);
}

template <typename T>
void launch_rpb_grad(const T* grad_attn, T* grad_rpb, const Problem& p, simt::Stream stream) {
  const int64_t entries = int64_t(p.heads) * (2 * p.h.kernel - 1) * (2 * p.w.kernel - 1);
  if (entries == 0 || p.tokens() == 0) return;
  simt::launch(rpb_grad_kernel<T>, dim3(unsigned(entries)), dim3(kThreads), 0, stream, grad_attn,
               grad_rpb, p);
}

#undef NA_GRID_STRIDE

}  // namespace DINAT_M2F_SIMT_NS
}  // namespace na
}  // namespace dinat_m2f
