// Multi-scale deformable attention's CUDA kernels (ms_deform_attn_device.cuh, through
// ms_deform_attn_device_ops.h), registered for the CUDA dispatch key.
#include "ms_deform_attn_device_ops.h"

namespace dinat_m2f {
namespace ms_deform_attn {

TORCH_LIBRARY_IMPL(dinat_m2f, CUDA, m) {
  register_ops<cuda::DeviceKernels>(m);
}

}  // namespace ms_deform_attn
}  // namespace dinat_m2f
