// CPU kernels of the NA ops, registered for the CPU dispatch key: parallel over tokens with
// at::parallel_for, inner loops over the head dim written for the compiler to vectorise
// (omp simd), accumulation in opmath_type (float for half/bfloat16).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../common/cpu_simd.h"
#include "na_ops.h"

namespace dinat_m2f {
namespace na {
namespace {

// Tokens per parallel chunk: enough work per task to amortise scheduling.
int64_t grain_for(const Problem& p) {
  const int64_t work = int64_t(p.heads) * p.neighbors() * p.dim;
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work));
}

using cpu::axpy;
using cpu::dot;

// The loops visit a neighbor token once for all heads: its (heads, dim) row is contiguous,
// which is far kinder to the caches than one head at a time.

template <typename T>
void qk_kernel(const T* query, const T* key, const T* rpb, T* attn, const Problem& p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors(), D = p.dim, row = p.heads * D;
  const int bias_w = 2 * p.w.kernel - 1, bias_hw = (2 * p.h.kernel - 1) * bias_w;
  at::parallel_for(0, p.tokens(), grain_for(p), [&](int64_t begin, int64_t end) {
    std::vector<Acc> q(row);
    for (int64_t t = begin; t < end; ++t) {
      const TokenCoords tc = coords_of(t, p);
      const Window wh = window_of(tc.h, p.h), ww = window_of(tc.w, p.w);
      for (int c = 0; c < row; ++c) q[c] = Acc(query[t * row + c]);
      T* out = attn + t * p.heads * K;
      for (int i = 0; i < p.h.kernel; ++i) {
        for (int j = 0; j < p.w.kernel; ++j) {
          const int64_t s = token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
          const int n = i * p.w.kernel + j;
          const int bias = (wh.bias_first + i) * bias_w + ww.bias_first + j;
          for (int head = 0; head < p.heads; ++head) {
            Acc logit = dot(q.data() + head * D, key + s * row + head * D, D);
            if (rpb != nullptr) logit += Acc(rpb[head * bias_hw + bias]);
            out[head * K + n] = T(logit);
          }
        }
      }
    }
  });
}

template <typename T>
void av_kernel(const T* attn, const T* value, T* out, const Problem& p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors(), D = p.dim, row = p.heads * D;
  at::parallel_for(0, p.tokens(), grain_for(p), [&](int64_t begin, int64_t end) {
    std::vector<Acc> acc(row);
    for (int64_t t = begin; t < end; ++t) {
      const TokenCoords tc = coords_of(t, p);
      const Window wh = window_of(tc.h, p.h), ww = window_of(tc.w, p.w);
      std::fill(acc.begin(), acc.end(), Acc(0));
      const T* a = attn + t * p.heads * K;
      for (int i = 0; i < p.h.kernel; ++i) {
        for (int j = 0; j < p.w.kernel; ++j) {
          const int64_t s = token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
          const int n = i * p.w.kernel + j;
          for (int head = 0; head < p.heads; ++head)
            axpy(Acc(a[head * K + n]), value + s * row + head * D, acc.data() + head * D, D);
        }
      }
      for (int c = 0; c < row; ++c) out[t * row + c] = T(acc[c]);
    }
  });
}

template <typename T>
void inverse_kernel(const T* weights, const T* source, T* out, const Problem& p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors(), D = p.dim, row = p.heads * D;
  at::parallel_for(0, p.tokens(), grain_for(p), [&](int64_t begin, int64_t end) {
    std::vector<Acc> acc(row);
    for (int64_t s = begin; s < end; ++s) {
      const TokenCoords sc = coords_of(s, p);
      std::fill(acc.begin(), acc.end(), Acc(0));
      for_each_query_of_key(sc.h, sc.w, p, [&](int qh, int qw, int slot) {
        const int64_t t = token_of(sc.batch, qh, qw, p);
        const T* w = weights + t * p.heads * K + slot;
        for (int head = 0; head < p.heads; ++head)
          axpy(Acc(w[head * K]), source + t * row + head * D, acc.data() + head * D, D);
      });
      for (int c = 0; c < row; ++c) out[s * row + c] = T(acc[c]);
    }
  });
}

// One task per (head, bias row): no two tasks write the same output.
template <typename T>
void rpb_grad_kernel(const T* grad_attn, T* grad_rpb, const Problem& p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors();
  const int rows = 2 * p.h.kernel - 1, cols = 2 * p.w.kernel - 1;
  at::parallel_for(0, int64_t(p.heads) * rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> acc(cols);
    for (int64_t task = begin; task < end; ++task) {
      const int head = int(task / rows), row = int(task % rows);
      std::fill(acc.begin(), acc.end(), Acc(0));
      for (int64_t t = 0; t < p.tokens(); ++t) {
        const TokenCoords tc = coords_of(t, p);
        const int i = row - window_of(tc.h, p.h).bias_first;
        if (i < 0 || i >= p.h.kernel) continue;
        const Window ww = window_of(tc.w, p.w);
        const T* g = grad_attn + (t * p.heads + head) * K + i * p.w.kernel;
        for (int j = 0; j < p.w.kernel; ++j) acc[ww.bias_first + j] += Acc(g[j]);
      }
      T* o = grad_rpb + (int64_t(head) * rows + row) * cols;
      for (int c = 0; c < cols; ++c) o[c] = T(acc[c]);
    }
  });
}

// The device interface of na_ops.h.
struct CpuKernels {
  static void qk(const at::Tensor& query, const at::Tensor& key, const at::Tensor& rpb,
                 at::Tensor& attn, const Problem& p) {
    DINAT_M2F_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na_qk_cpu", [&] {
      qk_kernel<scalar_t>(query.const_data_ptr<scalar_t>(), key.const_data_ptr<scalar_t>(),
                          data_or_null<scalar_t>(rpb), attn.mutable_data_ptr<scalar_t>(), p);
    });
  }
  static void av(const at::Tensor& attn, const at::Tensor& value, at::Tensor& out,
                 const Problem& p) {
    DINAT_M2F_DISPATCH_FLOATING_TYPES(attn.scalar_type(), "na_av_cpu", [&] {
      av_kernel<scalar_t>(attn.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
                          out.mutable_data_ptr<scalar_t>(), p);
    });
  }
  static void inverse(const at::Tensor& weights, const at::Tensor& source, at::Tensor& out,
                      const Problem& p) {
    DINAT_M2F_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "na_inverse_cpu", [&] {
      inverse_kernel<scalar_t>(weights.const_data_ptr<scalar_t>(),
                               source.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                               p);
    });
  }
  static void rpb_grad(const at::Tensor& grad_attn, at::Tensor& grad_rpb, const Problem& p) {
    DINAT_M2F_DISPATCH_FLOATING_TYPES(grad_attn.scalar_type(), "na_rpb_grad_cpu", [&] {
      rpb_grad_kernel<scalar_t>(grad_attn.const_data_ptr<scalar_t>(),
                                grad_rpb.mutable_data_ptr<scalar_t>(), p);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dinat_m2f, CPU, m) {
  register_ops<CpuKernels>(m);
}

}  // namespace na
}  // namespace dinat_m2f
