// Autograd of the fused CPU op dinat_m2f::na_fused, in C++: the backward of (out, lse) is
// na_fused_backward, which recomputes the scores from the saved inputs, out and lse. Written
// here rather than with torch.library.register_autograd, whose Python wrapper (a Python
// Function, the schema's defaults filled in per call) cost about 150 us per forward +
// backward, as much as both kernels of a 7x7 map, 1 head (docs/benchmarks.md, step 11). The
// fake kernels stay in Python (dinat_m2f/ops/na/registration.py): torch.compile traces this
// kernel on fake tensors.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <tuple>

namespace dinat_m2f {
namespace na {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& query, const at::Tensor& key,
                                                const at::Tensor& value,
                                                const c10::optional<at::Tensor>& rpb,
                                                at::IntArrayRef kernel_size,
                                                at::IntArrayRef dilation, double scale) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dinat_m2f::na_fused", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef, double)>();
  return op.call(query, key, value, rpb, kernel_size, dilation, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const c10::optional<at::Tensor>& rpb, const at::Tensor& out,
    const at::Tensor& lse, at::IntArrayRef kernel_size, at::IntArrayRef dilation, double scale) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dinat_m2f::na_fused_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
              at::IntArrayRef, at::IntArrayRef, double)>();
  return op.call(grad_out, query, key, value, rpb, out, lse, kernel_size, dilation, scale);
}

class FusedAttention : public torch::autograd::Function<FusedAttention> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& query, const at::Tensor& key,
                               const at::Tensor& value, const c10::optional<at::Tensor>& rpb,
                               at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                               double scale) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // the CPU (or fake) kernel
    auto [out, lse] = call_forward(query, key, value, rpb, kernel_size, dilation, scale);
    ctx->save_for_backward({query, key, value, rpb.value_or(at::Tensor()), out, lse});
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& rpb = saved[3];
    const std::vector<int64_t> kernel_size = ctx->saved_data["kernel_size"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    auto [grad_query, grad_key, grad_value, grad_rpb] =
        call_backward(grads[0].contiguous(), saved[0], saved[1], saved[2],
                      rpb.defined() ? c10::optional<at::Tensor>(rpb) : c10::nullopt, saved[4],
                      saved[5], kernel_size, dilation, ctx->saved_data["scale"].toDouble());
    // one gradient per forward input; none for the window and the scale
    const at::Tensor none;
    return {grad_query, grad_key, grad_value, rpb.defined() ? grad_rpb : none, none, none, none};
  }
};

std::tuple<at::Tensor, at::Tensor> na_fused_autograd(const at::Tensor& query, const at::Tensor& key,
                                                     const at::Tensor& value,
                                                     const c10::optional<at::Tensor>& rpb,
                                                     at::IntArrayRef kernel_size,
                                                     at::IntArrayRef dilation, double scale) {
  const variable_list outs =
      FusedAttention::apply(query, key, value, rpb, kernel_size, dilation, scale);
  return {outs[0], outs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(dinat_m2f, Autograd, m) {
  m.impl("na_fused", &na_fused_autograd);
}

}  // namespace na
}  // namespace dinat_m2f
