// Multi-scale deformable attention on a SIMT device (the GPU, or the emulated device): the
// `Kernels` interface of ms_deform_attn_ops.h over the launchers of
// ms_deform_attn_device.cuh. Included by ms_deform_attn_cuda.cu (registered for CUDA) and by
// native/testing/emulated_device.cpp (registered in dinat_m2f_testing for CPU tensors).
#pragma once

#include "../common/simt_torch.h"
#include "ms_deform_attn_device.cuh"
#include "ms_deform_attn_ops.h"

namespace dinat_m2f {
namespace ms_deform_attn {
namespace DINAT_M2F_SIMT_NS {

struct DeviceKernels {
  static void forward(const at::Tensor& value, const at::Tensor& locations,
                      const at::Tensor& weights, at::Tensor& out, const Problem& p,
                      const Levels& levels) {
    const simt::DeviceScope scope(value);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn", [&] {
      launch_forward<scalar_t>(value.const_data_ptr<scalar_t>(),
                               locations.const_data_ptr<scalar_t>(),
                               weights.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                               p, levels, scope.stream());
    });
  }
  static void backward(const at::Tensor& grad_out, const at::Tensor& value,
                       const at::Tensor& locations, const at::Tensor& weights,
                       at::Tensor& grad_value_acc, at::Tensor& grad_locations,
                       at::Tensor& grad_weights, const Problem& p, const Levels& levels) {
    const simt::DeviceScope scope(value);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward", [&] {
      using Acc = simt::acc_t<scalar_t>;
      launch_backward<scalar_t, Acc>(
          grad_out.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
          locations.const_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(),
          grad_value_acc.mutable_data_ptr<Acc>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>(), p, levels, scope.stream());
    });
  }
};

}  // namespace DINAT_M2F_SIMT_NS
}  // namespace ms_deform_attn
}  // namespace dinat_m2f
