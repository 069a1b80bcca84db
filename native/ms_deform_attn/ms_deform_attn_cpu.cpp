// CPU kernels of multi-scale deformable attention, registered for the CPU dispatch key:
// at::parallel_for, head-dim inner loops for the compiler to vectorise (omp simd),
// accumulation in opmath_type; float also built for AVX2 + FMA.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/cpu_isa.h"
#include "../common/cpu_simd.h"
#include "ms_deform_attn_ops.h"

namespace dinat_m2f {
namespace ms_deform_attn {
namespace {

using cpu::axpy;
using cpu::dot;

// The per-task loops are forced inline into each entry point below, so that the compiler
// builds them twice for float: for the baseline ISA and for AVX2 + FMA (chosen at run time,
// cpu_isa.h; forward 1.4-1.7x faster on the Zen 4, docs/benchmarks.md step 25).

// Forward, queries [begin, end) of (batch * len_q): the rows of all heads of each query.
template <typename T>
DINAT_M2F_INLINE void forward_queries(const T* value, const T* locations, const T* weights, T* out,
                                      const Problem& p, const Levels& lv, int64_t begin,
                                      int64_t end) {
  using Acc = at::opmath_type<T>;
  const int D = p.dim, S = p.samples();
  std::vector<Acc> acc(D);
  Corner<Acc> corners[4];
  for (int64_t bq = begin; bq < end; ++bq) {
    const int64_t b = bq / p.len_q;
    for (int h = 0; h < p.heads; ++h) {
      const int64_t r = bq * p.heads + h;
      const T* w = weights + r * S;
      const T* xy = locations + r * S * 2;
      const T* v = value + p.value_offset(b, h);
      std::fill(acc.begin(), acc.end(), Acc(0));
      for (int l = 0; l < p.levels; ++l) {
        for (int s = l * p.points; s < (l + 1) * p.points; ++s) {
          if (!bilinear_corners(Acc(xy[2 * s]), Acc(xy[2 * s + 1]), lv.height[l], lv.width[l],
                                lv.start[l], corners))
            continue;
          const Acc a = Acc(w[s]);
          for (int c = 0; c < 4; ++c) {
            if (!corners[c].inside) continue;
            axpy(a * corners[c].weight, v + corners[c].token * p.token_stride(), acc.data(), D);
          }
        }
      }
      T* o = out + r * D;
      for (int d = 0; d < D; ++d) o[d] = T(acc[d]);
    }
  }
}

// Backward, tasks [begin, end) of (batch, head, level): a task's corners all lie in the level's
// tokens of its (batch, head) slice of grad_value, which no other task touches, and it alone
// writes the location and weight gradients of its samples. No atomics, no races; the tasks
// are equally large (every query samples `points` locations per level).
template <typename T, typename Acc>
DINAT_M2F_INLINE void backward_tasks(const T* grad_out, const T* value, const T* locations,
                                     const T* weights, Acc* grad_value, T* grad_locations,
                                     T* grad_weights, const Problem& p, const Levels& lv,
                                     int64_t begin, int64_t end) {
  const int D = p.dim, S = p.samples();
  std::vector<Acc> g(D);
  Corner<Acc> corners[4];
  for (int64_t task = begin; task < end; ++task) {
    const int l = int(task % p.levels);
    const int h = int((task / p.levels) % p.heads);
    const int64_t b = task / (int64_t(p.levels) * p.heads);
    const T* v = value + p.value_offset(b, h);
    Acc* gv = grad_value + p.value_offset(b, h);
    for (int64_t q = 0; q < p.len_q; ++q) {
      const int64_t r = (b * p.len_q + q) * p.heads + h;
      for (int d = 0; d < D; ++d) g[d] = Acc(grad_out[r * D + d]);
      for (int s = l * p.points; s < (l + 1) * p.points; ++s) {
        const int64_t i = r * S + s;
        // a sample wholly off the map still writes its (zero) gradients
        const bool on_map = bilinear_corners(Acc(locations[2 * i]), Acc(locations[2 * i + 1]),
                                             lv.height[l], lv.width[l], lv.start[l], corners);
        const Acc a = Acc(weights[i]);
        Acc gw = Acc(0), gx = Acc(0), gy = Acc(0);
        for (int c = 0; c < 4; ++c) {
          if (!on_map || !corners[c].inside) continue;
          const int64_t offset = corners[c].token * p.token_stride();
          const Acc dv = dot(g.data(), v + offset, D);  // <grad_out, value at the corner>
          gw += corners[c].weight * dv;
          gx += corners[c].d_x * dv;
          gy += corners[c].d_y * dv;
          axpy(a * corners[c].weight, g.data(), gv + offset, D);
        }
        grad_weights[i] = T(gw);
        grad_locations[2 * i] = T(location_grad(a, gx, lv.width[l]));
        grad_locations[2 * i + 1] = T(location_grad(a, gy, lv.height[l]));
      }
    }
  }
}

__attribute__((target("avx2,fma"))) void forward_queries_avx2(const float* value,
                                                              const float* locations,
                                                              const float* weights, float* out,
                                                              const Problem& p, const Levels& lv,
                                                              int64_t begin, int64_t end) {
  forward_queries<float>(value, locations, weights, out, p, lv, begin, end);
}

__attribute__((target("avx2,fma"))) void backward_tasks_avx2(
    const float* grad_out, const float* value, const float* locations, const float* weights,
    float* grad_value, float* grad_locations, float* grad_weights, const Problem& p,
    const Levels& lv, int64_t begin, int64_t end) {
  backward_tasks<float, float>(grad_out, value, locations, weights, grad_value, grad_locations,
                               grad_weights, p, lv, begin, end);
}

// float runs the AVX2 + FMA build where the machine has one; other types the baseline
template <typename T>
bool use_avx2() {
  return std::is_same_v<T, float> && cpu::cpu_isa().isa >= cpu::Isa::kAvx2;
}

// Parallel over (batch, query); each task produces the rows of all heads of its queries.
template <typename T>
void forward_kernel(const T* value, const T* locations, const T* weights, T* out, const Problem& p,
                    const Levels& lv) {
  const int64_t work = std::max<int64_t>(1, int64_t(p.heads) * p.samples() * 4 * p.dim);
  const bool avx2 = use_avx2<T>();
  at::parallel_for(
      0, p.batch * p.len_q, std::max<int64_t>(1, 32768 / work), [&](int64_t begin, int64_t end) {
        if constexpr (std::is_same_v<T, float>) {
          if (avx2) return forward_queries_avx2(value, locations, weights, out, p, lv, begin, end);
        }
        forward_queries<T>(value, locations, weights, out, p, lv, begin, end);
      });
}

// Parallel over (batch, head, level); see backward_tasks.
template <typename T, typename Acc>
void backward_kernel(const T* grad_out, const T* value, const T* locations, const T* weights,
                     Acc* grad_value, T* grad_locations, T* grad_weights, const Problem& p,
                     const Levels& lv) {
  const bool avx2 = use_avx2<T>();
  at::parallel_for(0, p.batch * p.heads * p.levels, 1, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      if (avx2)
        return backward_tasks_avx2(grad_out, value, locations, weights, grad_value, grad_locations,
                                   grad_weights, p, lv, begin, end);
    }
    backward_tasks<T, Acc>(grad_out, value, locations, weights, grad_value, grad_locations,
                           grad_weights, p, lv, begin, end);
  });
}

// The device interface of ms_deform_attn_ops.h.
struct CpuKernels {
  static void forward(const at::Tensor& value, const at::Tensor& locations,
                      const at::Tensor& weights, at::Tensor& out, const Problem& p,
                      const Levels& levels) {
    DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu", [&] {
      forward_kernel<scalar_t>(
          value.const_data_ptr<scalar_t>(), locations.const_data_ptr<scalar_t>(),
          weights.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), p, levels);
    });
  }
  static void backward(const at::Tensor& grad_out, const at::Tensor& value,
                       const at::Tensor& locations, const at::Tensor& weights,
                       at::Tensor& grad_value_acc, at::Tensor& grad_locations,
                       at::Tensor& grad_weights, const Problem& p, const Levels& levels) {
    DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      using Acc = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t, Acc>(
          grad_out.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
          locations.const_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(),
          grad_value_acc.mutable_data_ptr<Acc>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>(), p, levels);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dinat_m2f, CPU, m) {
  register_ops<CpuKernels>(m);
}

}  // namespace ms_deform_attn
}  // namespace dinat_m2f
