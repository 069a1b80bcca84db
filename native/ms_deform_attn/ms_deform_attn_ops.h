// Host side of the multi-scale deformable attention ops (Deformable DETR's MSDeformAttn core),
// shared by every device: argument checks, the level layout read on the host, output
// allocation, and the entry points that the device files register for their dispatch key
// (ms_deform_attn_cpu.cpp: CPU, ms_deform_attn_cuda.cu: CUDA). The schemas are declared
// once, in native/op_schemas.h; autograd and fake kernels are registered from Python
// (dinat_m2f/ops/ms_deform_attn/registration.py).
//
// ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
//                attention_weights) -> (batch, len_q, heads*dim)
// samples every level of `value` at every point's location (ms_deform_attn_sampling.h) and
// sums the samples weighted by `attention_weights`. ms_deform_attn_backward returns the
// gradients of value, sampling_locations and attention_weights.
//
// spatial_shapes and level_start_index are read on the host (they are tiny): when they live
// on the GPU, each call copies them back, which synchronises with the stream. Passing them
// as CPU tensors avoids that (the pixel decoder does).
//
// A device provides a `Kernels` type with two static functions on checked, contiguous
// tensors in the layout of ms_deform_attn_sampling.h, outputs allocated here:
//   forward(value, locations, weights, out, p, levels)
//   backward(grad_out, value, locations, weights, grad_value_acc, grad_locations,
//            grad_weights, p, levels)
// grad_value_acc is zero-filled, of value's shape, in opmath_type (grad_value itself for
// float32 / float64); grad_locations and grad_weights are to be overwritten entirely.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <sstream>
#include <tuple>
#include <vector>

#include "../common/op_utils.h"
#include "ms_deform_attn_sampling.h"

namespace dinat_m2f {
namespace ms_deform_attn {

inline std::string shape_str(const at::Tensor& t) {
  return list_str(t.sizes());
}

// "[[h0, w0], [h1, w1]]"
inline std::string pairs_str(const int64_t* hw, int64_t count) {
  std::ostringstream os;
  os << "[";
  for (int64_t l = 0; l < count; ++l)
    os << (l ? ", " : "") << "[" << hw[2 * l] << ", " << hw[2 * l + 1] << "]";
  os << "]";
  return os.str();
}

inline void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                       const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, op, ": ", name, " must have shape ", layout, ", got ",
                    shape_str(t));
}

// `t`.size(dim) (called `what`) must equal `like`.size(like_dim).
inline void check_same_size(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                            const char* like_name, const at::Tensor& like, int64_t like_dim,
                            const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == like.size(like_dim), op, ": ", name, " has ", t.size(dim), " ",
                    what, " (dim ", dim, ") but ", like_name, " has ", like.size(like_dim),
                    " (dim ", like_dim, "); shapes ", shape_str(t), " and ", shape_str(like));
}

inline void check_float_like(const char* op, const char* name, const at::Tensor& t,
                             const at::Tensor& value) {
  TORCH_CHECK_VALUE(t.scalar_type() == value.scalar_type(), op, ": ", name,
                    " must have value's dtype ", value.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == value.device(), op, ": ", name, " must be on value's device ",
                    value.device(), ", got ", t.device());
}

inline void check_index_tensor(const char* op, const char* name, const at::Tensor& t,
                               const at::Tensor& value) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kLong, op, ": ", name, " must be an int64 tensor, got ",
                    t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == value.device() || t.is_cpu(), op, ": ", name,
                    " must be on value's device ", value.device(), " or on the CPU, got ",
                    t.device());
}

// Reads spatial_shapes / level_start_index and checks them against value's length axis.
inline Levels read_levels(const char* op, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& value) {
  const at::Tensor shapes = spatial_shapes.to(at::kCPU).contiguous();
  const at::Tensor starts = level_start_index.to(at::kCPU).contiguous();
  const int64_t count = shapes.size(0);
  const int64_t* hw = shapes.const_data_ptr<int64_t>();
  const int64_t* given = starts.const_data_ptr<int64_t>();
  const int64_t len_in = value.size(1);
  Levels levels;
  levels.count = int(count);
  std::vector<int64_t> expected(count);
  int64_t total = 0;  // saturates at 2^62, far above any real len_in, instead of overflowing
  for (int64_t l = 0; l < count; ++l) {
    const int64_t h = hw[2 * l], w = hw[2 * l + 1];
    TORCH_CHECK_VALUE(h >= 1 && w >= 1 && h <= INT32_MAX && w <= INT32_MAX, op,
                      ": spatial_shapes must hold (height, width) pairs of positive 32-bit "
                      "ints, got ",
                      pairs_str(hw, count));
    levels.height[l] = int(h);
    levels.width[l] = int(w);
    levels.start[l] = expected[l] = total;
    total = std::min<int64_t>(total + h * w, int64_t(1) << 62);
  }
  TORCH_CHECK_VALUE(total == len_in, op, ": spatial_shapes ", pairs_str(hw, count), " hold ", total,
                    " tokens (sum of height*width) but value has len_in = ", len_in,
                    " (value shape ", shape_str(value), ")");
  TORCH_CHECK_VALUE(std::equal(expected.begin(), expected.end(), given), op,
                    ": level_start_index must be the exclusive cumulative sum of height*width "
                    "over spatial_shapes ",
                    pairs_str(hw, count), ", i.e. ", list_str(expected), ", got ",
                    list_str(std::vector<int64_t>(given, given + count)));
  return levels;
}

// Checks the five inputs of the forward (and backward) op; fills `levels`.
inline Problem check_inputs(const char* op, const at::Tensor& value,
                            const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                            const at::Tensor& locations, const at::Tensor& weights,
                            Levels* levels) {
  check_rank(op, "value", value, 4, "(batch, len_in, heads, head_dim)");
  check_rank(op, "spatial_shapes", spatial_shapes, 2, "(levels, 2)");
  check_rank(op, "level_start_index", level_start_index, 1, "(levels,)");
  check_rank(op, "sampling_locations", locations, 6, "(batch, len_q, heads, levels, points, 2)");
  check_rank(op, "attention_weights", weights, 5, "(batch, len_q, heads, levels, points)");
  TORCH_CHECK_VALUE(spatial_shapes.size(1) == 2, op,
                    ": spatial_shapes must have shape (levels, 2), one (height, width) per "
                    "level, got ",
                    shape_str(spatial_shapes));
  TORCH_CHECK_VALUE(locations.size(5) == 2, op,
                    ": sampling_locations must end in a dim of 2 (x, y), got shape ",
                    shape_str(locations));
  const int64_t n_levels = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(n_levels >= 1 && n_levels <= kMaxLevels, op,
                    ": spatial_shapes must describe 1 to ", kMaxLevels, " levels, got ", n_levels);
  check_same_size(op, "level_start_index", level_start_index, 0, "spatial_shapes", spatial_shapes,
                  0, "levels");
  check_same_size(op, "sampling_locations", locations, 0, "value", value, 0, "batch entries");
  check_same_size(op, "sampling_locations", locations, 2, "value", value, 2, "heads");
  check_same_size(op, "sampling_locations", locations, 3, "spatial_shapes", spatial_shapes, 0,
                  "levels");
  for (int64_t d = 0; d < 5; ++d) {
    static const char* const kWhat[] = {"batch entries", "queries", "heads", "levels", "points"};
    check_same_size(op, "attention_weights", weights, d, "sampling_locations", locations, d,
                    kWhat[d]);
  }
  TORCH_CHECK_VALUE(at::isFloatingType(value.scalar_type()), op,
                    ": value must be a floating-point tensor, got ", value.scalar_type());
  check_float_like(op, "sampling_locations", locations, value);
  check_float_like(op, "attention_weights", weights, value);
  check_index_tensor(op, "spatial_shapes", spatial_shapes, value);
  check_index_tensor(op, "level_start_index", level_start_index, value);
  TORCH_CHECK_VALUE(value.size(2) <= INT32_MAX && value.size(3) <= INT32_MAX &&
                        locations.size(4) <= INT32_MAX / kMaxLevels,
                    op, ": heads, head_dim and points must fit 32-bit ints");
  *levels = read_levels(op, spatial_shapes, level_start_index, value);
  Problem p;
  p.batch = value.size(0);
  p.len_in = value.size(1);
  p.len_q = locations.size(1);
  p.heads = int(value.size(2));
  p.dim = int(value.size(3));
  p.levels = int(n_levels);
  p.points = int(locations.size(4));
  return p;
}

// Entry points, one per schema of native/op_schemas.h.

template <typename Kernels>
at::Tensor forward_op(const at::Tensor& value, const at::Tensor& spatial_shapes,
                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                      const at::Tensor& attention_weights) {
  Levels levels;
  const Problem p = check_inputs("ms_deform_attn", value, spatial_shapes, level_start_index,
                                 sampling_locations, attention_weights, &levels);
  at::Tensor out = at::empty({p.batch, p.len_q, p.token_stride()}, value.options());
  if (out.numel() == 0) return out;
  Kernels::forward(value.contiguous(), sampling_locations.contiguous(),
                   attention_weights.contiguous(), out, p, levels);
  return out;
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_op(const at::Tensor& grad_output,
                                                           const at::Tensor& value,
                                                           const at::Tensor& spatial_shapes,
                                                           const at::Tensor& level_start_index,
                                                           const at::Tensor& sampling_locations,
                                                           const at::Tensor& attention_weights) {
  const char* op = "ms_deform_attn_backward";
  Levels levels;
  const Problem p = check_inputs(op, value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights, &levels);
  const std::vector<int64_t> out_shape = {p.batch, p.len_q, p.token_stride()};
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(out_shape), op,
                    ": grad_output must have the output's shape (batch, len_q, heads*head_dim) ",
                    "= ", list_str(out_shape), ", got ", shape_str(grad_output));
  check_float_like(op, "grad_output", grad_output, value);
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_locations = at::empty(sampling_locations.sizes(), sampling_locations.options());
  at::Tensor grad_weights = at::empty(attention_weights.sizes(), attention_weights.options());
  if (p.rows() > 0) {
    Kernels::backward(grad_output.contiguous(), value.contiguous(), sampling_locations.contiguous(),
                      attention_weights.contiguous(), grad_value_acc, grad_locations, grad_weights,
                      p, levels);
  }
  at::Tensor grad_value =
      acc_type == value.scalar_type() ? grad_value_acc : grad_value_acc.to(value.scalar_type());
  return {grad_value, grad_locations, grad_weights};
}

// Registers the two public ops of one device (or of the emulated device, in the testing
// library).
template <typename Kernels>
void register_ops(torch::Library& m) {
  m.impl("ms_deform_attn", &forward_op<Kernels>);
  m.impl("ms_deform_attn_backward", &backward_op<Kernels>);
}

}  // namespace ms_deform_attn
}  // namespace dinat_m2f
