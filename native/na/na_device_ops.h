// The NA ops on a SIMT device (the GPU, or the emulated device): the `Kernels` interface of
// na_ops.h over the launchers of na_device.cuh. Included by na_cuda.cu (registered for CUDA)
// and by native/testing/emulated_device.cpp (registered in dinat_m2f_testing for CPU
// tensors).
#pragma once

#include "../common/simt_torch.h"
#include "na_device.cuh"
#include "na_ops.h"

namespace dinat_m2f {
namespace na {
namespace DINAT_M2F_SIMT_NS {

struct DeviceKernels {
  static void qk(const at::Tensor& query, const at::Tensor& key, const at::Tensor& rpb,
                 at::Tensor& attn, const Problem& p) {
    const simt::DeviceScope scope(query);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na_qk", [&] {
      launch_qk<scalar_t>(query.const_data_ptr<scalar_t>(), key.const_data_ptr<scalar_t>(),
                          data_or_null<scalar_t>(rpb), attn.mutable_data_ptr<scalar_t>(), p,
                          scope.stream());
    });
  }
  static void av(const at::Tensor& attn, const at::Tensor& value, at::Tensor& out,
                 const Problem& p) {
    const simt::DeviceScope scope(attn);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(attn.scalar_type(), "na_av", [&] {
      launch_av<scalar_t>(attn.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
                          out.mutable_data_ptr<scalar_t>(), p, scope.stream());
    });
  }
  static void inverse(const at::Tensor& weights, const at::Tensor& source, at::Tensor& out,
                      const Problem& p) {
    const simt::DeviceScope scope(weights);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "na_inverse", [&] {
      launch_inverse<scalar_t>(weights.const_data_ptr<scalar_t>(),
                               source.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                               p, scope.stream());
    });
  }
  static void rpb_grad(const at::Tensor& grad_attn, at::Tensor& grad_rpb, const Problem& p) {
    const simt::DeviceScope scope(grad_attn);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(grad_attn.scalar_type(), "na_rpb_grad", [&] {
      launch_rpb_grad<scalar_t>(grad_attn.const_data_ptr<scalar_t>(),
                                grad_rpb.mutable_data_ptr<scalar_t>(), p, scope.stream());
    });
  }
};

}  // namespace DINAT_M2F_SIMT_NS
}  // namespace na
}  // namespace dinat_m2f
