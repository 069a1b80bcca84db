// Marks the index maths shared by the CPU and CUDA kernels: inline host code for g++,
// host-and-device code for nvcc.
#pragma once

#if defined(__CUDACC__)
#define DINAT_M2F_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DINAT_M2F_HOST_DEVICE inline
#endif
