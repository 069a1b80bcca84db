// Head-dim inner loops of the CPU kernels (NA and MSDeformAttn), written for the compiler to
// vectorise (omp simd); Acc is the accumulation type (float for half/bfloat16 inputs).
#pragma once

namespace dinat_m2f {
namespace cpu {

template <typename Acc, typename T>
__attribute__((always_inline)) inline Acc dot(const Acc* a, const T* b, int n) {
  Acc sum = Acc(0);
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; ++i) sum += a[i] * Acc(b[i]);
  return sum;
}

// y += alpha * x
template <typename Acc, typename T>
__attribute__((always_inline)) inline void axpy(Acc alpha, const T* x, Acc* y, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * Acc(x[i]);
}

}  // namespace cpu
}  // namespace dinat_m2f
