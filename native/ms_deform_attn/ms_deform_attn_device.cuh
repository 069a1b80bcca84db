// Device code of multi-scale deformable attention, written once against the SIMT layer
// (common/simt.h): compiled by nvcc for the GPU (ms_deform_attn_cuda.cu) and by the host
// compiler for the emulated device (native/testing/emulated_device.cpp, and the sanitizer
// builds of native/testing/sanitizer/). No ATen here: the launchers take raw pointers.
//
// Forward: one thread per output element (row, channel) in grid-stride loops; the threads of
// a row read its locations and weights as broadcasts and the value channels coalesced.
// Backward: one warp per row. Lanes take channels (lane, lane + 32, ...), add their share of
// grad_value with atomicAdd into an accumulation-type buffer (fp32 for fp16/bf16; the caller
// casts it back), and reduce the per-sample dot products for the location and weight
// gradients with warp shuffles; lane 0 writes them. Accumulation is in simt::acc_t.
//
// Launchers (host code, the same in both builds):
//   launch_forward(value, locations, weights, out, p, levels, stream)
//   launch_backward(grad_out, value, locations, weights, grad_value_acc, grad_locations,
//                   grad_weights, p, levels, stream)
// in the layout of ms_deform_attn_sampling.h; grad_value_acc is zero-filled by the caller.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/simt.h"
#include "ms_deform_attn_sampling.h"

namespace dinat_m2f {
namespace ms_deform_attn {
namespace DINAT_M2F_SIMT_NS {

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
  using Acc = simt::acc_t<T>;
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
DINAT_M2F_DEVICE Acc warp_sum(Acc x) {
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
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; r < p.rows();
       r += warps) {
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

template <typename T>
void launch_forward(const T* value, const T* locations, const T* weights, T* out, const Problem& p,
                    const Levels& levels, simt::Stream stream) {
  const int64_t total = p.rows() * p.dim;
  if (total == 0) return;
  simt::launch(forward_kernel<T>, dim3(blocks_for(total)), dim3(kThreads), 0, stream, value,
               locations, weights, out, p, levels);
}

template <typename T, typename Acc>
void launch_backward(const T* grad_out, const T* value, const T* locations, const T* weights,
                     Acc* grad_value_acc, T* grad_locations, T* grad_weights, const Problem& p,
                     const Levels& levels, simt::Stream stream) {
  if (p.rows() == 0) return;
  simt::launch(backward_kernel<T, Acc>, dim3(blocks_for(p.rows() * kWarp)), dim3(kThreads), 0,
               stream, grad_out, value, locations, weights, grad_value_acc, grad_locations,
               grad_weights, p, levels);
}

}  // namespace DINAT_M2F_SIMT_NS
}  // namespace ms_deform_attn
}  // namespace dinat_m2f
