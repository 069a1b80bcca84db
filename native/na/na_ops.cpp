// The NA ops of the `dinat_m2f` torch library: schemas, input checks and device dispatch.
//
// Layout is heads-last: query/key/value (batch, *spatial, heads, dim), attention logits and
// weights (batch, *spatial, heads, prod(kernel_size)), neighbor order row-major over the
// window. One or two spatial axes, given by the length of `kernel_size`. Scaling and softmax
// happen outside (dinat_m2f/layers/na_functional.py); autograd and fake kernels are
// registered from Python (dinat_m2f/_ops.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <sstream>

#include "na_kernels.h"

namespace dinat_m2f {
namespace na {
namespace {

std::string shape_str(at::IntArrayRef shape) {
  std::ostringstream os;
  os << shape;
  return os.str();
}

// Checks kernel_size / dilation against a (batch, *spatial, heads, dim) tensor and returns
// the problem viewed as 2D (1D gets a dummy leading axis of length, kernel and dilation 1).
Problem make_problem(const char* op, const char* name, const at::Tensor& x,
                     at::IntArrayRef kernel_size, at::IntArrayRef dilation) {
  const int64_t rank = int64_t(kernel_size.size());
  TORCH_CHECK_VALUE(rank == 1 || rank == 2, op, ": kernel_size must have one entry per spatial ",
                    "axis (1 or 2), got ", shape_str(kernel_size));
  TORCH_CHECK_VALUE(int64_t(dilation.size()) == rank, op, ": dilation must have ", rank,
                    " entries like kernel_size, got ", shape_str(dilation));
  TORCH_CHECK_VALUE(x.dim() == rank + 3, op, ": ", name, " must have shape (batch, ",
                    rank == 1 ? "length" : "height, width", ", heads, dim) for a ", rank,
                    "D op, got ", shape_str(x.sizes()));
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()), op, ": ", name,
                    " must be a floating-point tensor, got ", x.scalar_type());
  Axis axes[2];
  for (int64_t a = 0; a < rank; ++a) {
    const int64_t k = kernel_size[a], d = dilation[a], length = x.size(1 + a);
    TORCH_CHECK_VALUE(k >= 3 && k % 2 == 1, op, ": kernel_size must be odd and >= 3, got ",
                      shape_str(kernel_size));
    TORCH_CHECK_VALUE(d >= 1, op, ": dilation must be >= 1, got ", shape_str(dilation));
    TORCH_CHECK_VALUE(length / d >= k, op, ": spatial axis ", a, " of ", name, " has length ",
                      length, " but kernel_size ", k, " with dilation ", d, " needs at least ",
                      k * d, " (input shape ", shape_str(x.sizes()), ")");
    TORCH_CHECK_VALUE(length <= INT32_MAX, op, ": spatial axis too long: ", length);
    axes[a] = Axis{int(length), int(k), int(d)};
  }
  Problem p;
  p.batch = x.size(0);
  p.heads = int(x.size(-2));
  p.dim = int(x.size(-1));
  p.h = rank == 2 ? axes[0] : Axis{1, 1, 1};
  p.w = rank == 2 ? axes[1] : axes[0];
  return p;
}

// (batch, *spatial, heads, dim) -> contiguous (batch, height, width, heads, dim).
at::Tensor as_2d(const at::Tensor& x, int64_t rank) {
  return (rank == 1 ? x.unsqueeze(1) : x).contiguous();
}

// (batch, height, width, heads, n) -> (batch, *spatial, heads, n).
at::Tensor from_2d(const at::Tensor& x, int64_t rank) { return rank == 1 ? x.squeeze(1) : x; }

void check_pair(const char* op, const char* name_a, const at::Tensor& a, const char* name_b,
                const at::Tensor& b, bool same_last_dim) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
                    " must be on the same device, got ", a.device(), " and ", b.device());
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
                    " must have the same dtype, got ", a.scalar_type(), " and ",
                    b.scalar_type());
  const bool same = a.dim() == b.dim() &&
                    (same_last_dim ? a.sizes() == b.sizes()
                                   : a.sizes().slice(0, a.dim() - 1) ==
                                         b.sizes().slice(0, b.dim() - 1));
  TORCH_CHECK_VALUE(same, op, ": ", name_a, " ", shape_str(a.sizes()), " and ", name_b, " ",
                    shape_str(b.sizes()), " must have the same shape",
                    same_last_dim ? "" : " except the last dim");
}

void check_attn(const char* op, const char* name, const at::Tensor& attn, const Problem& p,
                const at::Tensor& like) {
  const int64_t rank = like.dim() - 3;
  std::vector<int64_t> expected(like.sizes().begin(), like.sizes().end());
  expected.back() = p.neighbors();
  TORCH_CHECK_VALUE(attn.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
                    shape_str(expected), " (batch, *spatial, heads, prod(kernel_size) = ",
                    p.neighbors(), ") for ", rank, "D inputs of shape ",
                    shape_str(like.sizes()), ", got ", shape_str(attn.sizes()));
  TORCH_CHECK_VALUE(attn.device() == like.device() && attn.scalar_type() == like.scalar_type(),
                    op, ": ", name, " must match the inputs' device and dtype (",
                    like.device(), ", ", like.scalar_type(), "), got ", attn.device(), ", ",
                    attn.scalar_type());
}

std::vector<int64_t> rpb_shape(const Problem& p, int64_t rank) {
  if (rank == 1) return {p.heads, 2 * p.w.kernel - 1};
  return {p.heads, 2 * p.h.kernel - 1, 2 * p.w.kernel - 1};
}

at::Tensor checked_rpb(const char* op, const c10::optional<at::Tensor>& rpb, const Problem& p,
                       const at::Tensor& like) {
  if (!rpb.has_value() || !rpb->defined()) return at::Tensor();
  const int64_t rank = like.dim() - 3;
  const std::vector<int64_t> expected = rpb_shape(p, rank);
  TORCH_CHECK_VALUE(rpb->sizes() == at::IntArrayRef(expected), op,
                    ": rpb must have shape (heads, 2*kernel_size-1 per axis) = ",
                    shape_str(expected), ", got ", shape_str(rpb->sizes()));
  TORCH_CHECK_VALUE(rpb->device() == like.device() && rpb->scalar_type() == like.scalar_type(),
                    op, ": rpb must match query's device and dtype (", like.device(), ", ",
                    like.scalar_type(), "), got ", rpb->device(), ", ", rpb->scalar_type());
  return rpb->reshape({p.heads, 2 * p.h.kernel - 1, 2 * p.w.kernel - 1}).contiguous();
}

at::Tensor empty_2d(const Problem& p, int64_t last, const at::Tensor& like) {
  return at::empty({p.batch, p.h.length, p.w.length, p.heads, last}, like.options());
}

#ifdef WITH_CUDA
#define NA_ON_DEVICE(tensor, name, ...) \
  ((tensor).is_cuda() ? name##_cuda(__VA_ARGS__) : name##_cpu(__VA_ARGS__))
#else
#define NA_ON_DEVICE(tensor, name, ...) name##_cpu(__VA_ARGS__)
#endif

at::Tensor na_qk(const at::Tensor& query, const at::Tensor& key,
                 const c10::optional<at::Tensor>& rpb, at::IntArrayRef kernel_size,
                 at::IntArrayRef dilation) {
  const Problem p = make_problem("na_qk", "query", query, kernel_size, dilation);
  check_pair("na_qk", "query", query, "key", key, true);
  const int64_t rank = kernel_size.size();
  const at::Tensor bias = checked_rpb("na_qk", rpb, p, query);
  at::Tensor attn = empty_2d(p, p.neighbors(), query);
  NA_ON_DEVICE(query, qk, as_2d(query, rank), as_2d(key, rank), bias, attn, p);
  return from_2d(attn, rank);
}

at::Tensor na_av(const at::Tensor& attn, const at::Tensor& value, at::IntArrayRef kernel_size,
                 at::IntArrayRef dilation) {
  const Problem p = make_problem("na_av", "value", value, kernel_size, dilation);
  check_attn("na_av", "attn", attn, p, value);
  const int64_t rank = kernel_size.size();
  at::Tensor out = empty_2d(p, p.dim, value);
  NA_ON_DEVICE(value, av, as_2d(attn, rank), as_2d(value, rank), out, p);
  return from_2d(out, rank);
}

std::tuple<at::Tensor, at::Tensor> na_qk_backward(const at::Tensor& grad_attn,
                                                  const at::Tensor& query, const at::Tensor& key,
                                                  at::IntArrayRef kernel_size,
                                                  at::IntArrayRef dilation) {
  const Problem p = make_problem("na_qk_backward", "query", query, kernel_size, dilation);
  check_pair("na_qk_backward", "query", query, "key", key, true);
  check_attn("na_qk_backward", "grad_attn", grad_attn, p, query);
  const int64_t rank = kernel_size.size();
  const at::Tensor g = as_2d(grad_attn, rank);
  at::Tensor grad_query = empty_2d(p, p.dim, query);
  at::Tensor grad_key = empty_2d(p, p.dim, key);
  // d query[t] = sum_n g[t, n] key[neighbor n]: the av kernel with g as weights.
  NA_ON_DEVICE(query, av, g, as_2d(key, rank), grad_query, p);
  NA_ON_DEVICE(query, inverse, g, as_2d(query, rank), grad_key, p);
  return {from_2d(grad_query, rank), from_2d(grad_key, rank)};
}

std::tuple<at::Tensor, at::Tensor> na_av_backward(const at::Tensor& grad_out,
                                                  const at::Tensor& attn, const at::Tensor& value,
                                                  at::IntArrayRef kernel_size,
                                                  at::IntArrayRef dilation) {
  const Problem p = make_problem("na_av_backward", "value", value, kernel_size, dilation);
  check_pair("na_av_backward", "grad_out", grad_out, "value", value, true);
  check_attn("na_av_backward", "attn", attn, p, value);
  const int64_t rank = kernel_size.size();
  const at::Tensor g = as_2d(grad_out, rank);
  at::Tensor grad_attn = empty_2d(p, p.neighbors(), value);
  at::Tensor grad_value = empty_2d(p, p.dim, value);
  // d attn[t, n] = <g[t], value[neighbor n]>: the qk kernel without bias.
  NA_ON_DEVICE(value, qk, g, as_2d(value, rank), at::Tensor(), grad_attn, p);
  NA_ON_DEVICE(value, inverse, as_2d(attn, rank), g, grad_value, p);
  return {from_2d(grad_attn, rank), from_2d(grad_value, rank)};
}

at::Tensor na_rpb_backward(const at::Tensor& grad_attn, at::IntArrayRef kernel_size,
                           at::IntArrayRef dilation) {
  Problem p = make_problem("na_rpb_backward", "grad_attn", grad_attn, kernel_size, dilation);
  const int64_t rank = kernel_size.size();
  TORCH_CHECK_VALUE(grad_attn.size(-1) == p.neighbors(), "na_rpb_backward: grad_attn's last dim ",
                    "must be prod(kernel_size) = ", p.neighbors(), ", got ", grad_attn.size(-1));
  at::Tensor grad_rpb =
      at::zeros({p.heads, 2 * p.h.kernel - 1, 2 * p.w.kernel - 1}, grad_attn.options());
  if (p.tokens() > 0) NA_ON_DEVICE(grad_attn, rpb_grad, as_2d(grad_attn, rank), grad_rpb, p);
  return grad_rpb.view(rpb_shape(p, rank));
}

at::Tensor na_qk_tiled_emulation(const at::Tensor& query, const at::Tensor& key,
                                 const c10::optional<at::Tensor>& rpb,
                                 at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                 int64_t tile, int64_t chunk) {
  const Problem p = make_problem("_na_qk_tiled_emulation", "query", query, kernel_size, dilation);
  check_pair("_na_qk_tiled_emulation", "query", query, "key", key, true);
  TORCH_CHECK_VALUE((tile == 0 && chunk == 0) || (tile >= 1 && chunk >= 1),
                    "tile and chunk must be >= 1, or both 0 for the CUDA launch's choice, got ",
                    tile, ", ", chunk);
  const int64_t rank = kernel_size.size();
  const at::Tensor bias = checked_rpb("_na_qk_tiled_emulation", rpb, p, query);
  at::Tensor attn = empty_2d(p, p.neighbors(), query);
  qk_tiled_emulated_cpu(as_2d(query, rank), as_2d(key, rank), bias, attn, p, int(tile),
                        int(chunk));
  return from_2d(attn, rank);
}

at::Tensor na_av_tiled_emulation(const at::Tensor& attn, const at::Tensor& value,
                                 at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                 int64_t tile, int64_t chunk) {
  const Problem p = make_problem("_na_av_tiled_emulation", "value", value, kernel_size, dilation);
  check_attn("_na_av_tiled_emulation", "attn", attn, p, value);
  TORCH_CHECK_VALUE((tile == 0 && chunk == 0) || (tile >= 1 && chunk >= 1),
                    "tile and chunk must be >= 1, or both 0 for the CUDA launch's choice, got ",
                    tile, ", ", chunk);
  const int64_t rank = kernel_size.size();
  at::Tensor out = empty_2d(p, p.dim, value);
  av_tiled_emulated_cpu(as_2d(attn, rank), as_2d(value, rank), out, p, int(tile), int(chunk));
  return from_2d(out, rank);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dinat_m2f, m) {
  m.def("na_qk(Tensor query, Tensor key, Tensor? rpb, int[] kernel_size, int[] dilation) -> Tensor");
  m.def("na_av(Tensor attn, Tensor value, int[] kernel_size, int[] dilation) -> Tensor");
  m.def("na_qk_backward(Tensor grad_attn, Tensor query, Tensor key, int[] kernel_size, "
        "int[] dilation) -> (Tensor, Tensor)");
  m.def("na_av_backward(Tensor grad_out, Tensor attn, Tensor value, int[] kernel_size, "
        "int[] dilation) -> (Tensor, Tensor)");
  m.def("na_rpb_backward(Tensor grad_attn, int[] kernel_size, int[] dilation) -> Tensor");
  m.def("_na_qk_tiled_emulation(Tensor query, Tensor key, Tensor? rpb, int[] kernel_size, "
        "int[] dilation, int tile, int chunk) -> Tensor");
  m.def("_na_av_tiled_emulation(Tensor attn, Tensor value, int[] kernel_size, int[] dilation, "
        "int tile, int chunk) -> Tensor");
}

TORCH_LIBRARY_IMPL(dinat_m2f, CPU, m) {
  m.impl("na_qk", &na_qk);
  m.impl("na_av", &na_av);
  m.impl("na_qk_backward", &na_qk_backward);
  m.impl("na_av_backward", &na_av_backward);
  m.impl("na_rpb_backward", &na_rpb_backward);
  m.impl("_na_qk_tiled_emulation", &na_qk_tiled_emulation);
  m.impl("_na_av_tiled_emulation", &na_av_tiled_emulation);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(dinat_m2f, CUDA, m) {
  m.impl("na_qk", &na_qk);
  m.impl("na_av", &na_av);
  m.impl("na_qk_backward", &na_qk_backward);
  m.impl("na_av_backward", &na_av_backward);
  m.impl("na_rpb_backward", &na_rpb_backward);
}
#endif

}  // namespace na
}  // namespace dinat_m2f
