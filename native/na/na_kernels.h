// Device kernels of the NA ops. Tensors arrive checked, contiguous and viewed as 2D
// problems (see na_index.h); outputs are allocated by the caller (ops.cpp).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include "na_index.h"

namespace dinat_m2f {
namespace na {

// Every kernel runs on float32, float64, float16 and bfloat16.
#define NA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// Data pointer of an optional tensor (the RPB), or nullptr when it is undefined.
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// attn[t, h, n] = <query[t, h], key[neighbor n of t, h]> (+ rpb[h, bias index of n]).
// `rpb` may be undefined. `problem.dim` is the query/key head dim.
void qk_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& rpb,
            at::Tensor& attn, const Problem& problem);
// out[t, h] = sum_n attn[t, h, n] * value[neighbor n of t, h]. `problem.dim`: value head dim.
void av_cpu(const at::Tensor& attn, const at::Tensor& value, at::Tensor& out,
            const Problem& problem);
// out[s, h] = sum over (t, n) with neighbor n of t == s of weights[t, h, n] * source[t, h]:
// the transpose of `av`, giving the key and value gradients.
void inverse_cpu(const at::Tensor& weights, const at::Tensor& source, at::Tensor& out,
                 const Problem& problem);
// grad_rpb[h, i, j] = sum of grad_attn over the (token, neighbor) pairs with bias index (i, j).
void rpb_grad_cpu(const at::Tensor& grad_attn, at::Tensor& grad_rpb, const Problem& problem);

// The CUDA tiled kernels' block programs run on the CPU (test-only, see na_tiled.h).
void qk_tiled_emulated_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& rpb,
                           at::Tensor& attn, const Problem& problem, int tile, int chunk);
void av_tiled_emulated_cpu(const at::Tensor& attn, const at::Tensor& value, at::Tensor& out,
                           const Problem& problem, int tile, int chunk);

#ifdef WITH_CUDA
void qk_cuda(const at::Tensor& query, const at::Tensor& key, const at::Tensor& rpb,
             at::Tensor& attn, const Problem& problem);
void av_cuda(const at::Tensor& attn, const at::Tensor& value, at::Tensor& out,
             const Problem& problem);
void inverse_cuda(const at::Tensor& weights, const at::Tensor& source, at::Tensor& out,
                  const Problem& problem);
void rpb_grad_cuda(const at::Tensor& grad_attn, at::Tensor& grad_rpb, const Problem& problem);
#endif

}  // namespace na
}  // namespace dinat_m2f
