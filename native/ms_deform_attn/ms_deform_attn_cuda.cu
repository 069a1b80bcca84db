// CUDA kernels of multi-scale deformable attention, registered for the CUDA dispatch key.
//
// Forward: one thread per output element (row, channel) in grid-stride loops; the threads of
// a row read its locations and weights as broadcasts and the value channels coalesced.
// Backward: one warp per row. Lanes take channels (lane, lane + 32, ...), add their share of
// grad_value with atomicAdd into an opmath_type buffer (fp32 for fp16/bf16; the caller casts
// it back), and reduce the per-sample dot products for the location and weight gradients
// with warp shuffles; lane 0 writes them. Accumulation is in opmath_type throughout.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "ms_deform_attn_ops.h"

namespace dinat_m2f {
namespace ms_deform_attn {
namespace {

constexpr int kThreads = 256;  // a multiple of the warp size
constexpr int kWarp = 32;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

inline unsigned int blocks_for(int64_t threads) {
  return unsigned(std::min<int64_t>(kMaxBlocks, (threads + kThreads - 1) / kThreads));
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ value, const T* __restrict__ locations,
                               const T* __restrict__ weights, T* __restrict__ out, Problem p,
                               Levels lv) {
  using Acc = at::opmath_type<T>;
  const int S = p.samples();
  const int64_t total = p.rows() * p.dim;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(e % p.dim);
    const int64_t r = e / p.dim;
    const int h = int(r % p.heads);
    const int64_t b = r / (int64_t(p.heads) * p.len_q);
    const T* v = value + p.value_offset(b, h) + d;
    const T* w = weights + r * S;
    const T* xy = locations + r * S * 2;
    Corner<Acc> corners[4];
    Acc sum = Acc(0);
    for (int l = 0; l < p.levels; ++l) {
      for (int s = l * p.points; s < (l + 1) * p.points; ++s) {
        if (!bilinear_corners(Acc(xy[2 * s]), Acc(xy[2 * s + 1]), lv.height[l], lv.width[l],
                              lv.start[l], corners))
          continue;
        const Acc a = Acc(w[s]);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (corners[c].inside)
            sum += a * corners[c].weight * Acc(v[corners[c].token * p.token_stride()]);
        }
      }
    }
    out[e] = T(sum);
  }
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

template <typename T, typename Acc>
__global__ void backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ value,
                                const T* __restrict__ locations, const T* __restrict__ weights,
                                Acc* __restrict__ grad_value, T* __restrict__ grad_locations,
                                T* __restrict__ grad_weights, Problem p, Levels lv) {
  const int S = p.samples();
  const int lane = int(threadIdx.x % kWarp);
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  // r is the same for every lane of a warp, so the shuffles below see all 32 lanes.
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
       r < p.rows(); r += warps) {
    const int h = int(r % p.heads);
    const int64_t b = r / (int64_t(p.heads) * p.len_q);
    const T* v = value + p.value_offset(b, h);
    Acc* gv = grad_value + p.value_offset(b, h);
    const T* g = grad_out + r * p.dim;
    Corner<Acc> corners[4];
    for (int l = 0; l < p.levels; ++l) {
      for (int s = l * p.points; s < (l + 1) * p.points; ++s) {
        const int64_t i = r * S + s;
        // a sample wholly off the map still writes its (zero) gradients
        const bool on_map = bilinear_corners(Acc(locations[2 * i]), Acc(locations[2 * i + 1]),
                                             lv.height[l], lv.width[l], lv.start[l], corners);
        const Acc a = Acc(weights[i]);
        Acc gw = Acc(0), gx = Acc(0), gy = Acc(0);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (!on_map || !corners[c].inside) continue;
          const int64_t offset = corners[c].token * p.token_stride();
          const Acc scale = a * corners[c].weight;
          Acc dv = Acc(0);  // this lane's part of <grad_out, value at the corner>
          for (int d = lane; d < p.dim; d += kWarp) {
            const Acc gd = Acc(g[d]);
            dv += gd * Acc(v[offset + d]);
            atomicAdd(gv + offset + d, scale * gd);
          }
          gw += corners[c].weight * dv;
          gx += corners[c].d_x * dv;
          gy += corners[c].d_y * dv;
        }
        gw = warp_sum(gw);
        gx = warp_sum(gx);
        gy = warp_sum(gy);
        if (lane == 0) {
          grad_weights[i] = T(gw);
          grad_locations[2 * i] = T(location_grad(a, gx, lv.width[l]));
          grad_locations[2 * i + 1] = T(location_grad(a, gy, lv.height[l]));
        }
      }
    }
  }
}

// The device interface of ms_deform_attn_ops.h.
struct CudaKernels {
  static void forward(const at::Tensor& value, const at::Tensor& locations,
                    const at::Tensor& weights, at::Tensor& out, const Problem& p,
                    const Levels& levels) {
    const c10::cuda::CUDAGuard guard(value.device());
    const int64_t total = p.rows() * p.dim;
    if (total == 0) return;
    DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cuda", [&] {
      forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0,
                                 c10::cuda::getCurrentCUDAStream()>>>(
          value.const_data_ptr<scalar_t>(), locations.const_data_ptr<scalar_t>(),
          weights.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), p, levels);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void backward(const at::Tensor& grad_out, const at::Tensor& value,
                     const at::Tensor& locations, const at::Tensor& weights,
                     at::Tensor& grad_value_acc, at::Tensor& grad_locations,
                     at::Tensor& grad_weights, const Problem& p, const Levels& levels) {
    const c10::cuda::CUDAGuard guard(value.device());
    if (p.rows() == 0) return;
    DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using Acc = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t, Acc><<<blocks_for(p.rows() * kWarp), kThreads, 0,
                                       c10::cuda::getCurrentCUDAStream()>>>(
          grad_out.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
          locations.const_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(),
          grad_value_acc.mutable_data_ptr<Acc>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>(), p, levels);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dinat_m2f, CUDA, m) { register_ops<CudaKernels>(m); }

}  // namespace ms_deform_attn
}  // namespace dinat_m2f
