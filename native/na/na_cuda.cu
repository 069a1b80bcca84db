// CUDA kernels of the NA ops, registered for the CUDA dispatch key.
//
// Naive kernels (one thread per output element, grid-stride loops) cover every op, dtype,
// kernel size and head dim. The 2D QK and AV kernels for DiNAT's sizes (kernel 3..13, head
// dim 32 or 64) use the shared-memory tiled block programs of na_tiled.h. Accumulation is in
// opmath_type (fp32 for fp16/bf16).
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

#include "na_ops.h"
#include "na_tiled.h"

namespace dinat_m2f {
namespace na {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

inline unsigned int blocks_for(int64_t elements) {
  return unsigned(std::min<int64_t>(kMaxBlocks, (elements + kThreads - 1) / kThreads));
}

#define NA_GRID_STRIDE(index, total)                                                   \
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < (total); \
       index += int64_t(gridDim.x) * blockDim.x)

// One thread per logit (token, head, neighbor).
template <typename T>
__global__ void qk_naive_kernel(const T* __restrict__ query, const T* __restrict__ key,
                                const T* __restrict__ rpb, T* __restrict__ attn, Problem p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors();
  const int bias_w = 2 * p.w.kernel - 1, bias_hw = (2 * p.h.kernel - 1) * bias_w;
  NA_GRID_STRIDE(e, p.tokens() * p.heads * K) {
    const int n = int(e % K);
    const int head = int((e / K) % p.heads);
    const int64_t t = e / (int64_t(K) * p.heads);
    const TokenCoords tc = coords_of(t, p);
    const Window wh = window_of(tc.h, p.h), ww = window_of(tc.w, p.w);
    const int i = n / p.w.kernel, j = n % p.w.kernel;
    const int64_t s = token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
    const T* qp = query + (t * p.heads + head) * p.dim;
    const T* kp = key + (s * p.heads + head) * p.dim;
    Acc sum = Acc(0);
    for (int d = 0; d < p.dim; ++d) sum += Acc(qp[d]) * Acc(kp[d]);
    if (rpb != nullptr) sum += Acc(rpb[head * bias_hw + (wh.bias_first + i) * bias_w + ww.bias_first + j]);
    attn[e] = T(sum);
  }
}

// One thread per output channel (token, head, channel).
template <typename T>
__global__ void av_naive_kernel(const T* __restrict__ attn, const T* __restrict__ value,
                                T* __restrict__ out, Problem p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors();
  NA_GRID_STRIDE(e, p.tokens() * p.heads * p.dim) {
    const int d = int(e % p.dim);
    const int head = int((e / p.dim) % p.heads);
    const int64_t t = e / (int64_t(p.dim) * p.heads);
    const TokenCoords tc = coords_of(t, p);
    const Window wh = window_of(tc.h, p.h), ww = window_of(tc.w, p.w);
    const T* a = attn + (t * p.heads + head) * K;
    Acc sum = Acc(0);
    for (int i = 0; i < p.h.kernel; ++i) {
      for (int j = 0; j < p.w.kernel; ++j) {
        const int64_t s = token_of(tc.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
        sum += Acc(a[i * p.w.kernel + j]) * Acc(value[(s * p.heads + head) * p.dim + d]);
      }
    }
    out[e] = T(sum);
  }
}

// One thread per output channel of a key: gathers from the queries whose window holds it.
template <typename T>
__global__ void inverse_naive_kernel(const T* __restrict__ weights, const T* __restrict__ source,
                                     T* __restrict__ out, Problem p) {
  using Acc = at::opmath_type<T>;
  const int K = p.neighbors();
  NA_GRID_STRIDE(e, p.tokens() * p.heads * p.dim) {
    const int d = int(e % p.dim);
    const int head = int((e / p.dim) % p.heads);
    const int64_t s = e / (int64_t(p.dim) * p.heads);
    const TokenCoords sc = coords_of(s, p);
    Acc sum = Acc(0);
    for_each_query_of_key(sc.h, sc.w, p, [&](int qh, int qw, int slot) {
      const int64_t t = token_of(sc.batch, qh, qw, p);
      sum += Acc(weights[(t * p.heads + head) * K + slot]) *
             Acc(source[(t * p.heads + head) * p.dim + d]);
    });
    out[e] = T(sum);
  }
}

// One block per bias entry (head, row, col), reducing over all tokens.
template <typename T>
__global__ void rpb_grad_kernel(const T* __restrict__ grad_attn, T* __restrict__ grad_rpb,
                                Problem p) {
  using Acc = at::opmath_type<T>;
  __shared__ Acc partial[kThreads];
  const int K = p.neighbors();
  const int rows = 2 * p.h.kernel - 1, cols = 2 * p.w.kernel - 1;
  const int head = blockIdx.x / (rows * cols);
  const int row = (blockIdx.x / cols) % rows, col = blockIdx.x % cols;
  Acc sum = Acc(0);
  for (int64_t t = threadIdx.x; t < p.tokens(); t += blockDim.x) {
    const TokenCoords tc = coords_of(t, p);
    const int i = row - window_of(tc.h, p.h).bias_first;
    const int j = col - window_of(tc.w, p.w).bias_first;
    if (i >= 0 && i < p.h.kernel && j >= 0 && j < p.w.kernel)
      sum += Acc(grad_attn[(t * p.heads + head) * K + i * p.w.kernel + j]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_rpb[blockIdx.x] = T(partial[0]);
}

struct CudaBlock {
  int tid;
  int threads;
  __host__ __device__ void sync() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
};

template <typename T>
__global__ void qk_tiled_kernel(const T* query, const T* key, const T* rpb, T* attn, Problem p,
                                int tile, int chunk) {
  using Acc = at::opmath_type<T>;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  tiled::Tile t;
  if (!tiled::locate_tile(blockIdx.x, p, tile, &t)) return;
  tiled::qk_tile_program(CudaBlock{int(threadIdx.x), int(blockDim.x)}, p, t, tile, chunk, query,
                         key, rpb, attn, reinterpret_cast<Acc*>(smem_bytes));
}

template <typename T>
__global__ void av_tiled_kernel(const T* attn, const T* value, T* out, Problem p, int tile,
                                int chunk) {
  using Acc = at::opmath_type<T>;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  tiled::Tile t;
  if (!tiled::locate_tile(blockIdx.x, p, tile, &t)) return;
  tiled::av_tile_program(CudaBlock{int(threadIdx.x), int(blockDim.x)}, p, t, tile, chunk, attn,
                         value, out, reinterpret_cast<Acc*>(smem_bytes));
}

// The device interface of na_ops.h.
struct CudaKernels {
  static void qk(const at::Tensor& query, const at::Tensor& key, const at::Tensor& rpb,
               at::Tensor& attn, const Problem& p) {
    const c10::cuda::CUDAGuard guard(query.device());
    const int64_t total = p.tokens() * p.heads * p.neighbors();
    if (total == 0) return;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    DINAT_M2F_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na_qk_cuda", [&] {
      using Acc = at::opmath_type<scalar_t>;
      const tiled::TilePlan plan = tiled::plan_tiles(p, sizeof(Acc), tiled::qk_smem_elems);
      if (plan.use) {
        qk_tiled_kernel<scalar_t><<<unsigned(tiled::num_blocks(p, plan.tile)), kThreads,
                                    plan.smem_bytes, stream>>>(
            query.const_data_ptr<scalar_t>(), key.const_data_ptr<scalar_t>(),
            data_or_null<scalar_t>(rpb), attn.mutable_data_ptr<scalar_t>(), p, plan.tile,
            plan.chunk);
      } else {
        qk_naive_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            query.const_data_ptr<scalar_t>(), key.const_data_ptr<scalar_t>(),
            data_or_null<scalar_t>(rpb), attn.mutable_data_ptr<scalar_t>(), p);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void av(const at::Tensor& attn, const at::Tensor& value, at::Tensor& out, const Problem& p) {
    const c10::cuda::CUDAGuard guard(attn.device());
    const int64_t total = p.tokens() * p.heads * p.dim;
    if (total == 0) return;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    DINAT_M2F_DISPATCH_FLOATING_TYPES(attn.scalar_type(), "na_av_cuda", [&] {
      using Acc = at::opmath_type<scalar_t>;
      const tiled::TilePlan plan = tiled::plan_tiles(p, sizeof(Acc), tiled::av_smem_elems);
      if (plan.use) {
        av_tiled_kernel<scalar_t><<<unsigned(tiled::num_blocks(p, plan.tile)), kThreads,
                                    plan.smem_bytes, stream>>>(
            attn.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), p, plan.tile, plan.chunk);
      } else {
        av_naive_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            attn.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), p);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void inverse(const at::Tensor& weights, const at::Tensor& source, at::Tensor& out,
                    const Problem& p) {
    const c10::cuda::CUDAGuard guard(weights.device());
    const int64_t total = p.tokens() * p.heads * p.dim;
    if (total == 0) return;
    DINAT_M2F_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "na_inverse_cuda", [&] {
      inverse_naive_kernel<scalar_t><<<blocks_for(total), kThreads, 0,
                                       c10::cuda::getCurrentCUDAStream()>>>(
          weights.const_data_ptr<scalar_t>(), source.const_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void rpb_grad(const at::Tensor& grad_attn, at::Tensor& grad_rpb, const Problem& p) {
    const c10::cuda::CUDAGuard guard(grad_attn.device());
    const int64_t entries = int64_t(p.heads) * (2 * p.h.kernel - 1) * (2 * p.w.kernel - 1);
    if (entries == 0) return;
    DINAT_M2F_DISPATCH_FLOATING_TYPES(grad_attn.scalar_type(), "na_rpb_grad_cuda", [&] {
      rpb_grad_kernel<scalar_t><<<unsigned(entries), kThreads, 0,
                                  c10::cuda::getCurrentCUDAStream()>>>(
          grad_attn.const_data_ptr<scalar_t>(), grad_rpb.mutable_data_ptr<scalar_t>(), p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dinat_m2f, CUDA, m) { register_ops<CudaKernels>(m); }

}  // namespace na
}  // namespace dinat_m2f
