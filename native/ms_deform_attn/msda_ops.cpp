// Multi-scale deformable attention (Deformable DETR's MSDeformAttn core) in the `dinat_m2f`
// torch library: schemas, input checks, device dispatch and the CPU kernels.
//
// ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
//                attention_weights) -> (batch, len_q, heads*dim)
// samples every level of `value` at every point's location (msda_sampling.h) and sums the
// samples weighted by `attention_weights`. ms_deform_attn_backward returns the gradients of
// value, sampling_locations and attention_weights. Autograd and fake kernels are registered
// from Python (dinat_m2f/layers/ms_deform_attn_native.py).
//
// spatial_shapes and level_start_index are read on the host (they are tiny): when they live
// on the GPU, each call copies them back, which synchronises with the stream. Passing them
// as CPU tensors avoids that.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <sstream>
#include <vector>

#include "../common/cpu_simd.h"
#include "msda_kernels.h"

namespace dinat_m2f {
namespace msda {
namespace {

// -------------------------------------------------------------------------------------------
// input checks

template <typename Seq>
std::string str(const Seq& values) {
  std::ostringstream os;
  os << "[";
  bool first = true;
  for (const auto& v : values) {
    os << (first ? "" : ", ") << v;
    first = false;
  }
  os << "]";
  return os.str();
}

std::string shape_str(const at::Tensor& t) { return str(t.sizes()); }

// "[[h0, w0], [h1, w1]]"
std::string pairs_str(const int64_t* hw, int64_t count) {
  std::ostringstream os;
  os << "[";
  for (int64_t l = 0; l < count; ++l)
    os << (l ? ", " : "") << "[" << hw[2 * l] << ", " << hw[2 * l + 1] << "]";
  os << "]";
  return os.str();
}

void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, op, ": ", name, " must have shape ", layout, ", got ",
                    shape_str(t));
}

// `t`.size(dim) (called `what`) must equal `like`.size(like_dim).
void check_same_size(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                     const char* like_name, const at::Tensor& like, int64_t like_dim,
                     const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == like.size(like_dim), op, ": ", name, " has ", t.size(dim), " ",
                    what, " (dim ", dim, ") but ", like_name, " has ", like.size(like_dim),
                    " (dim ", like_dim, "); shapes ", shape_str(t), " and ", shape_str(like));
}

void check_float_like(const char* op, const char* name, const at::Tensor& t,
                      const at::Tensor& value) {
  TORCH_CHECK_VALUE(t.scalar_type() == value.scalar_type(), op, ": ", name,
                    " must have value's dtype ", value.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == value.device(), op, ": ", name,
                    " must be on value's device ", value.device(), ", got ", t.device());
}

void check_index_tensor(const char* op, const char* name, const at::Tensor& t,
                        const at::Tensor& value) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kLong, op, ": ", name,
                    " must be an int64 tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == value.device() || t.is_cpu(), op, ": ", name,
                    " must be on value's device ", value.device(), " or on the CPU, got ",
                    t.device());
}

// Reads spatial_shapes / level_start_index and checks them against value's length axis.
Levels read_levels(const char* op, const at::Tensor& spatial_shapes,
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
  TORCH_CHECK_VALUE(total == len_in, op, ": spatial_shapes ", pairs_str(hw, count), " hold ",
                    total, " tokens (sum of height*width) but value has len_in = ", len_in,
                    " (value shape ", shape_str(value), ")");
  TORCH_CHECK_VALUE(std::equal(expected.begin(), expected.end(), given), op,
                    ": level_start_index must be the exclusive cumulative sum of height*width "
                    "over spatial_shapes ",
                    pairs_str(hw, count), ", i.e. ", str(expected), ", got ",
                    str(std::vector<int64_t>(given, given + count)));
  return levels;
}

// Checks the five inputs of the forward (and backward) op; fills `levels`.
Problem check_inputs(const char* op, const at::Tensor& value, const at::Tensor& spatial_shapes,
                     const at::Tensor& level_start_index, const at::Tensor& locations,
                     const at::Tensor& weights, Levels* levels) {
  check_rank(op, "value", value, 4, "(batch, len_in, heads, head_dim)");
  check_rank(op, "spatial_shapes", spatial_shapes, 2, "(levels, 2)");
  check_rank(op, "level_start_index", level_start_index, 1, "(levels,)");
  check_rank(op, "sampling_locations", locations, 6,
             "(batch, len_q, heads, levels, points, 2)");
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
                    ": spatial_shapes must describe 1 to ", kMaxLevels, " levels, got ",
                    n_levels);
  check_same_size(op, "level_start_index", level_start_index, 0, "spatial_shapes",
                  spatial_shapes, 0, "levels");
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

// -------------------------------------------------------------------------------------------
// CPU kernels: at::parallel_for, head-dim inner loops for the compiler to vectorise
// (omp simd), accumulation in opmath_type.

using cpu::axpy;
using cpu::dot;

// Parallel over (batch, query); each task produces the rows of all heads of its query.
template <typename T>
void forward_kernel(const T* value, const T* locations, const T* weights, T* out,
                    const Problem& p, const Levels& lv) {
  using Acc = at::opmath_type<T>;
  const int D = p.dim, S = p.samples();
  const int64_t work = std::max<int64_t>(1, int64_t(p.heads) * S * 4 * D);
  at::parallel_for(0, p.batch * p.len_q, std::max<int64_t>(1, 32768 / work),
                   [&](int64_t begin, int64_t end) {
    std::vector<Acc> acc(D);
    Corner<Acc> corners[4];
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / p.len_q;
      for (int h = 0; h < p.heads; ++h) {
        const int64_t r = bq * p.heads + h;
        const T* w = weights + r * S;
        const T* xy = locations + r * S * 2;
        const T* v = value + p.value_offset(b, h);
        std::fill(acc.begin(), acc.end(), Acc(0));
        for (int l = 0; l < p.levels; ++l) {
          for (int s = l * p.points; s < (l + 1) * p.points; ++s) {
            if (!bilinear_corners(Acc(xy[2 * s]), Acc(xy[2 * s + 1]), lv.height[l], lv.width[l],
                                  lv.start[l], corners))
              continue;
            const Acc a = Acc(w[s]);
            for (int c = 0; c < 4; ++c) {
              if (!corners[c].inside) continue;
              axpy(a * corners[c].weight, v + corners[c].token * p.token_stride(), acc.data(), D);
            }
          }
        }
        T* o = out + r * D;
        for (int d = 0; d < D; ++d) o[d] = T(acc[d]);
      }
    }
  });
}

// Parallel over (batch, head, level): a task's corners all lie in the level's tokens of its
// (batch, head) slice of grad_value, which no other task touches, and it alone writes the
// location and weight gradients of its samples. No atomics, no races; the tasks are equally
// large (every query samples `points` locations per level).
template <typename T, typename Acc>
void backward_kernel(const T* grad_out, const T* value, const T* locations, const T* weights,
                     Acc* grad_value, T* grad_locations, T* grad_weights, const Problem& p,
                     const Levels& lv) {
  const int D = p.dim, S = p.samples();
  at::parallel_for(0, p.batch * p.heads * p.levels, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> g(D);
    Corner<Acc> corners[4];
    for (int64_t task = begin; task < end; ++task) {
      const int l = int(task % p.levels);
      const int h = int((task / p.levels) % p.heads);
      const int64_t b = task / (int64_t(p.levels) * p.heads);
      const T* v = value + p.value_offset(b, h);
      Acc* gv = grad_value + p.value_offset(b, h);
      for (int64_t q = 0; q < p.len_q; ++q) {
        const int64_t r = (b * p.len_q + q) * p.heads + h;
        for (int d = 0; d < D; ++d) g[d] = Acc(grad_out[r * D + d]);
        for (int s = l * p.points; s < (l + 1) * p.points; ++s) {
          const int64_t i = r * S + s;
          // a sample wholly off the map still writes its (zero) gradients
          const bool on_map = bilinear_corners(Acc(locations[2 * i]), Acc(locations[2 * i + 1]),
                                               lv.height[l], lv.width[l], lv.start[l], corners);
          const Acc a = Acc(weights[i]);
          Acc gw = Acc(0), gx = Acc(0), gy = Acc(0);
          for (int c = 0; c < 4; ++c) {
            if (!on_map || !corners[c].inside) continue;
            const int64_t offset = corners[c].token * p.token_stride();
            const Acc dv = dot(g.data(), v + offset, D);  // <grad_out, value at the corner>
            gw += corners[c].weight * dv;
            gx += corners[c].d_x * dv;
            gy += corners[c].d_y * dv;
            axpy(a * corners[c].weight, g.data(), gv + offset, D);
          }
          grad_weights[i] = T(gw);
          grad_locations[2 * i] = T(location_grad(a, gx, lv.width[l]));
          grad_locations[2 * i + 1] = T(location_grad(a, gy, lv.height[l]));
        }
      }
    }
  });
}

}  // namespace

void forward_cpu(const at::Tensor& value, const at::Tensor& locations, const at::Tensor& weights,
                 at::Tensor& out, const Problem& problem, const Levels& levels) {
  MSDA_DISPATCH(value.scalar_type(), "ms_deform_attn_cpu", [&] {
    forward_kernel<scalar_t>(value.const_data_ptr<scalar_t>(),
                             locations.const_data_ptr<scalar_t>(),
                             weights.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                             problem, levels);
  });
}

void backward_cpu(const at::Tensor& grad_out, const at::Tensor& value,
                  const at::Tensor& locations, const at::Tensor& weights,
                  at::Tensor& grad_value_acc, at::Tensor& grad_locations,
                  at::Tensor& grad_weights, const Problem& problem, const Levels& levels) {
  MSDA_DISPATCH(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using Acc = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t, Acc>(
        grad_out.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
        locations.const_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(),
        grad_value_acc.mutable_data_ptr<Acc>(), grad_locations.mutable_data_ptr<scalar_t>(),
        grad_weights.mutable_data_ptr<scalar_t>(), problem, levels);
  });
}

namespace {

// -------------------------------------------------------------------------------------------
// ops

#ifdef WITH_CUDA
#define MSDA_ON_DEVICE(tensor, name, ...) \
  ((tensor).is_cuda() ? name##_cuda(__VA_ARGS__) : name##_cpu(__VA_ARGS__))
#else
#define MSDA_ON_DEVICE(tensor, name, ...) name##_cpu(__VA_ARGS__)
#endif

at::Tensor ms_deform_attn(const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index,
                          const at::Tensor& sampling_locations,
                          const at::Tensor& attention_weights) {
  Levels levels;
  const Problem p = check_inputs("ms_deform_attn", value, spatial_shapes, level_start_index,
                                 sampling_locations, attention_weights, &levels);
  at::Tensor out = at::empty({p.batch, p.len_q, p.token_stride()}, value.options());
  if (out.numel() == 0) return out;
  MSDA_ON_DEVICE(value, forward, value.contiguous(), sampling_locations.contiguous(),
                 attention_weights.contiguous(), out, p, levels);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const char* op = "ms_deform_attn_backward";
  Levels levels;
  const Problem p = check_inputs(op, value, spatial_shapes, level_start_index,
                                 sampling_locations, attention_weights, &levels);
  const std::vector<int64_t> out_shape = {p.batch, p.len_q, p.token_stride()};
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(out_shape), op,
                    ": grad_output must have the output's shape (batch, len_q, heads*head_dim) ",
                    "= ", str(out_shape), ", got ", shape_str(grad_output));
  check_float_like(op, "grad_output", grad_output, value);
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_locations = at::empty(sampling_locations.sizes(), sampling_locations.options());
  at::Tensor grad_weights = at::empty(attention_weights.sizes(), attention_weights.options());
  if (p.rows() > 0) {
    MSDA_ON_DEVICE(value, backward, grad_output.contiguous(), value.contiguous(),
                   sampling_locations.contiguous(), attention_weights.contiguous(),
                   grad_value_acc, grad_locations, grad_weights, p, levels);
  }
  at::Tensor grad_value = acc_type == value.scalar_type()
                              ? grad_value_acc
                              : grad_value_acc.to(value.scalar_type());
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dinat_m2f, m) {
  m.def("ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
        "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def("ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
        "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dinat_m2f, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(dinat_m2f, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward);
}
#endif

}  // namespace msda
}  // namespace dinat_m2f
