// The NA ops' CUDA kernels (na_device.cuh, through na_device_ops.h), registered for the CUDA
// dispatch key.
#include "na_device_ops.h"

namespace dinat_m2f {
namespace na {

TORCH_LIBRARY_IMPL(dinat_m2f, CUDA, m) {
  register_ops<cuda::DeviceKernels>(m);
}

}  // namespace na
}  // namespace dinat_m2f
