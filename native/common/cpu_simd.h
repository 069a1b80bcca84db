// Head-dim inner loops of the CPU kernels (NA and MSDeformAttn), written for the compiler to
// vectorise (omp simd); Acc is the accumulation type (float for half/bfloat16 inputs).
#pragma once

// Kernel code forced inline into the per-ISA entry points (target attributes), so that it is
// compiled for each entry point's instruction set rather than once for the baseline.
#define DINAT_M2F_INLINE __attribute__((always_inline)) inline
// Lambdas too: an outlined lambda would be compiled for the baseline ISA.
#define DINAT_M2F_INLINE_LAMBDA __attribute__((always_inline))

namespace dinat_m2f {
namespace cpu {

template <typename Acc, typename T>
DINAT_M2F_INLINE Acc dot(const Acc* a, const T* b, int n) {
  Acc sum = Acc(0);
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; ++i) sum += a[i] * Acc(b[i]);
  return sum;
}

// y += alpha * x
template <typename Acc, typename T>
DINAT_M2F_INLINE void axpy(Acc alpha, const T* x, Acc* y, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * Acc(x[i]);
}

}  // namespace cpu
}  // namespace dinat_m2f
