// Bilinear sampling of multi-scale deformable attention (Deformable DETR, Mask2Former's pixel
// decoder), shared by the CPU and CUDA kernels.
//
// Level l of the value pyramid is an (height_l, width_l) map stored row-major from token
// start_l of value's length axis. A normalised location (x, y) in [0, 1]^2 (it may lie
// outside) is sampled like grid_sample(align_corners=False, padding_mode="zeros"): pixel
// coordinates px = x * width - 0.5, py = y * height - 0.5, bilinear interpolation of the four
// surrounding pixels, and pixels outside the map read as zero.
//
// Tensors are contiguous with heads next to last:
//   value               (batch, len_in, heads, dim)
//   sampling_locations  (batch, len_q, heads, levels, points, 2)   (x, y)
//   attention_weights   (batch, len_q, heads, levels, points)
//   output              (batch, len_q, heads, dim)                  == (batch, len_q, heads*dim)
// A "row" is one (batch, query, head) triple, r = (b * len_q + q) * heads + h; its samples
// are the levels*points (level-major) entries at r * samples() of the weights.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/host_device.h"

namespace dinat_m2f {
namespace ms_deform_attn {

// Levels travel to the kernels by value, so the kernels never read the shape tensors.
constexpr int kMaxLevels = 16;

struct Levels {
  int count;
  int height[kMaxLevels];
  int width[kMaxLevels];
  int64_t start[kMaxLevels];  // first token of the level in value's length axis
};

struct Problem {
  int64_t batch;
  int64_t len_in;
  int64_t len_q;
  int heads;
  int dim;
  int levels;
  int points;

  DINAT_M2F_HOST_DEVICE int samples() const { return levels * points; }
  DINAT_M2F_HOST_DEVICE int64_t rows() const { return batch * len_q * heads; }
  // Elements between consecutive tokens of value (and of grad_value).
  DINAT_M2F_HOST_DEVICE int64_t token_stride() const { return int64_t(heads) * dim; }
  // value of (batch b, head h) starts here; token t of it is at + t * token_stride().
  DINAT_M2F_HOST_DEVICE int64_t value_offset(int64_t b, int h) const {
    return (b * len_in * heads + h) * int64_t(dim);
  }
};

// One pixel of a bilinear sample: whether it lies on the map (pixels off the map are zero
// padding and add nothing to the sample nor to any gradient), its token in value's length
// axis, its interpolation weight, and the weight's derivatives along the pixel coordinates.
template <typename Acc>
struct Corner {
  bool inside;
  int64_t token;
  Acc weight;
  Acc d_x;  // d weight / d px
  Acc d_y;  // d weight / d py
};

// Fills the four corners of the sample of level (height, width, start) at the normalised
// location (x, y): (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1). Returns false, leaving
// `corners` unset, when none is on the map (also for NaN), before any float-to-int
// conversion. Callers loop over the corners with a constant trip count (unrolled, so the
// array stays in registers on the GPU) and skip those not `inside`.
template <typename Acc>
DINAT_M2F_HOST_DEVICE bool bilinear_corners(Acc x, Acc y, int height, int width, int64_t start,
                                            Corner<Acc> (&corners)[4]) {
  const Acc px = x * Acc(width) - Acc(0.5);
  const Acc py = y * Acc(height) - Acc(0.5);
  if (!(px > Acc(-1) && py > Acc(-1) && px < Acc(width) && py < Acc(height))) return false;
  const int x0 = int(::floor(px)), y0 = int(::floor(py));  // in [-1, width-1] x [-1, height-1]
  const Acc fx = px - Acc(x0), fy = py - Acc(y0);
  const Acc gx = Acc(1) - fx, gy = Acc(1) - fy;
  const bool top = y0 >= 0, bottom = y0 + 1 < height;
  const bool left = x0 >= 0, right = x0 + 1 < width;
  const int64_t token = start + int64_t(y0) * width + x0;  // of (y0, x0); unused when outside
  corners[0] = Corner<Acc>{top && left, token, gy * gx, -gy, -gx};
  corners[1] = Corner<Acc>{top && right, token + 1, gy * fx, gy, -fx};
  corners[2] = Corner<Acc>{bottom && left, token + width, fy * gx, -fy, gx};
  corners[3] = Corner<Acc>{bottom && right, token + width + 1, fy * fx, fy, fx};
  return true;
}

// Gradients of one sample's location from sum_c d_x[c] * <grad_out, value[c]> (and d_y):
// d px / d x = width and d py / d y = height, scaled by the sample's attention weight.
template <typename Acc>
DINAT_M2F_HOST_DEVICE Acc location_grad(Acc attention, Acc corner_sum, int extent) {
  return attention * corner_sum * Acc(extent);
}

}  // namespace ms_deform_attn
}  // namespace dinat_m2f
