// Device kernels of the multi-scale deformable attention ops. Tensors arrive checked and
// contiguous in the layout of msda_sampling.h; outputs are allocated by the caller
// (msda_ops.cpp).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include "msda_sampling.h"

namespace dinat_m2f {
namespace msda {

// Every kernel runs on float32, float64, float16 and bfloat16, accumulating in opmath_type
// (float32 for float16 and bfloat16).
#define MSDA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// out[b, q, h] = sum over (level, point) of weight * bilinear sample of value[b, level, h].
void forward_cpu(const at::Tensor& value, const at::Tensor& locations, const at::Tensor& weights,
                 at::Tensor& out, const Problem& problem, const Levels& levels);

// Gradients of the forward. grad_value_acc is zero-filled, of value's shape, in opmath_type
// (it is grad_value itself for float32 / float64); grad_locations and grad_weights are
// overwritten entirely.
void backward_cpu(const at::Tensor& grad_out, const at::Tensor& value,
                  const at::Tensor& locations, const at::Tensor& weights,
                  at::Tensor& grad_value_acc, at::Tensor& grad_locations,
                  at::Tensor& grad_weights, const Problem& problem, const Levels& levels);

#ifdef WITH_CUDA
void forward_cuda(const at::Tensor& value, const at::Tensor& locations,
                  const at::Tensor& weights, at::Tensor& out, const Problem& problem,
                  const Levels& levels);
void backward_cuda(const at::Tensor& grad_out, const at::Tensor& value,
                   const at::Tensor& locations, const at::Tensor& weights,
                   at::Tensor& grad_value_acc, at::Tensor& grad_locations,
                   at::Tensor& grad_weights, const Problem& problem, const Levels& levels);
#endif

}  // namespace msda
}  // namespace dinat_m2f
