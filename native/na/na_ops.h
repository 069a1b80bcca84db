// Host side of the NA ops, shared by every device: argument checks, the 2D view of 1D
// problems, output allocation, and the entry points that the device files register for
// their dispatch key (na_cpu.cpp: CPU, na_cuda.cu: CUDA). The schemas are declared once, in
// native/op_schemas.h.
//
// Layout is heads-last: query/key/value (batch, *spatial, heads, dim), attention logits and
// weights (batch, *spatial, heads, prod(kernel_size)), neighbor order row-major over the
// window. One or two spatial axes, given by the length of `kernel_size`. Scaling and softmax
// happen outside (dinat_m2f/layers/na.py); autograd and fake kernels are registered from
// Python (dinat_m2f/ops/na/registration.py).
//
// A device provides a `Kernels` type with four static functions on contiguous 2D problems
// (tensors (batch, height, width, heads, n), outputs allocated here):
//   qk(query, key, rpb, attn, p)      attn[t, h, n] = <query[t, h], key[neighbor n]> (+ rpb)
//   av(attn, value, out, p)           out[t, h] = sum_n attn[t, h, n] * value[neighbor n]
//   inverse(weights, source, out, p)  the transpose of av: key and value gradients
//   rpb_grad(grad_attn, grad_rpb, p)  grad_attn summed per bias entry
// `rpb` may be undefined; `p.dim` is the head dim of the tensor reduced or produced.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../common/op_utils.h"
#include "na_index.h"

namespace dinat_m2f {
namespace na {

// Checks kernel_size / dilation against a (batch, *spatial, heads, dim) tensor and returns
// the problem viewed as 2D (1D gets a dummy leading axis of length, kernel and dilation 1).
inline Problem make_problem(const char* op, const char* name, const at::Tensor& x,
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
inline at::Tensor as_2d(const at::Tensor& x, int64_t rank) {
  return (rank == 1 ? x.unsqueeze(1) : x).contiguous();
}

// (batch, height, width, heads, n) -> (batch, *spatial, heads, n).
inline at::Tensor from_2d(const at::Tensor& x, int64_t rank) {
  return rank == 1 ? x.squeeze(1) : x;
}

inline void check_pair(const char* op, const char* name_a, const at::Tensor& a, const char* name_b,
                       const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
                    " must be on the same device, got ", a.device(), " and ", b.device());
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
                    " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), op, ": ", name_a, " ", shape_str(a.sizes()), " and ",
                    name_b, " ", shape_str(b.sizes()), " must have the same shape");
}

inline void check_attn(const char* op, const char* name, const at::Tensor& attn, const Problem& p,
                       const at::Tensor& like) {
  const int64_t rank = like.dim() - 3;
  std::vector<int64_t> expected(like.sizes().begin(), like.sizes().end());
  expected.back() = p.neighbors();
  TORCH_CHECK_VALUE(attn.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
                    shape_str(expected),
                    " (batch, *spatial, heads, prod(kernel_size) = ", p.neighbors(), ") for ", rank,
                    "D inputs of shape ", shape_str(like.sizes()), ", got ",
                    shape_str(attn.sizes()));
  TORCH_CHECK_VALUE(attn.device() == like.device() && attn.scalar_type() == like.scalar_type(), op,
                    ": ", name, " must match the inputs' device and dtype (", like.device(), ", ",
                    like.scalar_type(), "), got ", attn.device(), ", ", attn.scalar_type());
}

inline std::vector<int64_t> rpb_shape(const Problem& p, int64_t rank) {
  if (rank == 1) return {p.heads, 2 * p.w.kernel - 1};
  return {p.heads, 2 * p.h.kernel - 1, 2 * p.w.kernel - 1};
}

// The RPB as a contiguous (heads, 2kh-1, 2kw-1) tensor, or an undefined tensor for none.
inline at::Tensor checked_rpb(const char* op, const c10::optional<at::Tensor>& rpb,
                              const Problem& p, const at::Tensor& like) {
  if (!rpb.has_value() || !rpb->defined()) return at::Tensor();
  const int64_t rank = like.dim() - 3;
  const std::vector<int64_t> expected = rpb_shape(p, rank);
  TORCH_CHECK_VALUE(rpb->sizes() == at::IntArrayRef(expected), op,
                    ": rpb must have shape (heads, 2*kernel_size-1 per axis) = ",
                    shape_str(expected), ", got ", shape_str(rpb->sizes()));
  TORCH_CHECK_VALUE(rpb->device() == like.device() && rpb->scalar_type() == like.scalar_type(), op,
                    ": rpb must match query's device and dtype (", like.device(), ", ",
                    like.scalar_type(), "), got ", rpb->device(), ", ", rpb->scalar_type());
  return rpb->reshape({p.heads, 2 * p.h.kernel - 1, 2 * p.w.kernel - 1}).contiguous();
}

inline at::Tensor empty_2d(const Problem& p, int64_t last, const at::Tensor& like) {
  return at::empty({p.batch, p.h.length, p.w.length, p.heads, last}, like.options());
}

// ------------------------------------------------------------------------------------------
// Entry points, one per schema of native/op_schemas.h.

template <typename Kernels>
at::Tensor qk(const at::Tensor& query, const at::Tensor& key, const c10::optional<at::Tensor>& rpb,
              at::IntArrayRef kernel_size, at::IntArrayRef dilation) {
  const Problem p = make_problem("na_qk", "query", query, kernel_size, dilation);
  check_pair("na_qk", "query", query, "key", key);
  const int64_t rank = kernel_size.size();
  const at::Tensor bias = checked_rpb("na_qk", rpb, p, query);
  at::Tensor attn = empty_2d(p, p.neighbors(), query);
  if (attn.numel() > 0) Kernels::qk(as_2d(query, rank), as_2d(key, rank), bias, attn, p);
  return from_2d(attn, rank);
}

template <typename Kernels>
at::Tensor av(const at::Tensor& attn, const at::Tensor& value, at::IntArrayRef kernel_size,
              at::IntArrayRef dilation) {
  const Problem p = make_problem("na_av", "value", value, kernel_size, dilation);
  check_attn("na_av", "attn", attn, p, value);
  const int64_t rank = kernel_size.size();
  at::Tensor out = empty_2d(p, p.dim, value);
  if (out.numel() > 0) Kernels::av(as_2d(attn, rank), as_2d(value, rank), out, p);
  return from_2d(out, rank);
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> qk_backward(const at::Tensor& grad_attn, const at::Tensor& query,
                                               const at::Tensor& key, at::IntArrayRef kernel_size,
                                               at::IntArrayRef dilation) {
  const Problem p = make_problem("na_qk_backward", "query", query, kernel_size, dilation);
  check_pair("na_qk_backward", "query", query, "key", key);
  check_attn("na_qk_backward", "grad_attn", grad_attn, p, query);
  const int64_t rank = kernel_size.size();
  at::Tensor grad_query = empty_2d(p, p.dim, query);
  at::Tensor grad_key = empty_2d(p, p.dim, key);
  if (grad_query.numel() > 0) {
    const at::Tensor g = as_2d(grad_attn, rank);
    // d query[t] = sum_n g[t, n] key[neighbor n]: the av kernel with g as weights.
    Kernels::av(g, as_2d(key, rank), grad_query, p);
    Kernels::inverse(g, as_2d(query, rank), grad_key, p);
  }
  return {from_2d(grad_query, rank), from_2d(grad_key, rank)};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> av_backward(const at::Tensor& grad_out, const at::Tensor& attn,
                                               const at::Tensor& value, at::IntArrayRef kernel_size,
                                               at::IntArrayRef dilation) {
  const Problem p = make_problem("na_av_backward", "value", value, kernel_size, dilation);
  check_pair("na_av_backward", "grad_out", grad_out, "value", value);
  check_attn("na_av_backward", "attn", attn, p, value);
  const int64_t rank = kernel_size.size();
  at::Tensor grad_attn = empty_2d(p, p.neighbors(), value);
  at::Tensor grad_value = empty_2d(p, p.dim, value);
  if (grad_value.numel() > 0) {
    const at::Tensor g = as_2d(grad_out, rank);
    // d attn[t, n] = <g[t], value[neighbor n]>: the qk kernel without bias.
    Kernels::qk(g, as_2d(value, rank), at::Tensor(), grad_attn, p);
    Kernels::inverse(as_2d(attn, rank), g, grad_value, p);
  }
  return {from_2d(grad_attn, rank), from_2d(grad_value, rank)};
}

template <typename Kernels>
at::Tensor rpb_backward(const at::Tensor& grad_attn, at::IntArrayRef kernel_size,
                        at::IntArrayRef dilation) {
  const Problem p = make_problem("na_rpb_backward", "grad_attn", grad_attn, kernel_size, dilation);
  const int64_t rank = kernel_size.size();
  TORCH_CHECK_VALUE(grad_attn.size(-1) == p.neighbors(), "na_rpb_backward: grad_attn's last ",
                    "dim must be prod(kernel_size) = ", p.neighbors(), ", got ",
                    grad_attn.size(-1));
  at::Tensor grad_rpb =
      at::zeros({p.heads, 2 * p.h.kernel - 1, 2 * p.w.kernel - 1}, grad_attn.options());
  if (p.tokens() > 0 && p.heads > 0) Kernels::rpb_grad(as_2d(grad_attn, rank), grad_rpb, p);
  return grad_rpb.view(rpb_shape(p, rank));
}

// Registers the five public NA ops of one device (or of the emulated device, in the testing
// library).
template <typename Kernels>
void register_ops(torch::Library& m) {
  m.impl("na_qk", &qk<Kernels>);
  m.impl("na_av", &av<Kernels>);
  m.impl("na_qk_backward", &qk_backward<Kernels>);
  m.impl("na_av_backward", &av_backward<Kernels>);
  m.impl("na_rpb_backward", &rpb_backward<Kernels>);
}

}  // namespace na
}  // namespace dinat_m2f
