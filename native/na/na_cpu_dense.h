// The register-level kernels of fused NA on the CPU for whole-window groups: problems whose
// dilation groups are exactly a kernel long on both axes (a 7 x 7 map with kernel 7, 14 x 14
// at dilation 2, ...: DiNAT's last level and its dilated levels at 224 px). There every
// query's window is its whole group, so a group is n = kh * kw tokens of plain attention with
// a bias, and its products are small dense matrix products: scores with the keys in the
// vector lanes (all n of them, padded to whole vectors), weighted sums with the head dim in
// them, register-blocked over several queries (or keys) at once. The row kernels
// (na_cpu_tiles.h) tile one row of at most 7 queries there, in an 8-lane vector, and scatter
// the key-side gradients pair by pair; against them these ran the forward 1.16-1.32x and the
// backward 1.32-1.53x as fast (docs/benchmarks.md, step 21).
//
// Host side (packing, tasks, tables): na_cpu_fused.cpp. Every function is always_inline,
// compiled into the ISA entry points there, like na_cpu_tiles.h, whose vector helpers it uses.
#pragma once

#include "na_cpu_tiles.h"

namespace dinat_m2f {
namespace na {
namespace cpu_dense {

using cpu_tiles::for_blocks;
using cpu_tiles::load;
using cpu_tiles::SimdOf;
using cpu_tiles::splat;
using cpu_tiles::store;

// One (batch, group, head) of a whole-window problem, packed. Token t = i * kw + j is group
// row i, column j. Token-major buffers hold a token's head dim contiguously, padded with zeros
// to whole vectors; score rows hold one value per key token, padded to `n_pad` (a whole number
// of vectors).
template <typename T>
struct Group {
  int n, n_pad;        // tokens, and score-row length
  int dim, dim_v;      // head dims of query/key and of value/grad_out
  int q_pad, v_pad;    // token strides of the query/key and value/grad_out buffers
  T logit_scale;       // scale * log2 e: the scores are kept in base 2
  T scale;             // of the logits (the backward's query and key gradients carry it)
  const T* bias;       // the head's RPB times log2 e: query t's row of key biases is the n
  const int* bias_at;  // values from bias + bias_at[t] (see GroupBias); null without RPB
  const T* mask;       // n_pad values: 0 for the keys, -inf for the padding
  const T* keep;       // n_pad values: 1 for the keys, 0 for the padding
  const T* q;          // [n][q_pad]
  const T* k;          // [n][q_pad] (backward)
  const T* kt;         // [dim][n_pad], dim-major key
  const T* v;          // [n][v_pad] value (forward)
  const T* vt;         // [dim_v][n_pad], dim-major value (backward)
  const T* g;          // [n][v_pad] grad_out (backward)
  T* scores;           // [n][n_pad] work rows: the probabilities
  T* grads;            // [n][n_pad] work rows: the score gradients (backward)
  // forward
  T* out;     // [n][v_pad]
  T* lse;     // [n_pad]: log2 sum exp2 of each query's logits
  T* maxima;  // [n_pad] work: each query's largest logit
  T* inv;     // [n_pad] work: each query's sum of exp2, then its reciprocal
  // backward
  const T* lse_in;  // [n], as the forward wrote it
  const T* delta;   // [n]: rowsum(grad_out * out)
  T* grad_q;        // [n][q_pad]
  T* grad_k;        // [n][q_pad]
  T* grad_v;        // [n][v_pad]
  T* grad_bias;     // [n][n_pad] score gradients without the scale, or null without RPB
};

// Query rows and key vectors per score block: R * K accumulators, K key vectors and a
// broadcast query value within the ISA's registers (AVX-512: 20 + 4 + 1 of 32, where 6 rows
// spilled; 16-register ISAs: 9 + 3 + 1).
template <typename Isa>
constexpr int score_rows() {
  return Isa::kRegisters >= 32 ? 5 : 3;
}
template <typename Isa>
constexpr int score_keys() {
  return Isa::kRegisters >= 32 ? 4 : 3;
}
// Rows per weighted-sum block, of up to two vectors of the head dim each (16 and 10
// accumulators).
template <typename Isa>
constexpr int sum_rows() {
  return Isa::kRegisters >= 32 ? 8 : 5;
}

// acc[r][c] = sum_s w[r * wr + s * ws] * xs[s * x_stride + offset + c * L], s < count: the
// register block of every product here, R weights broadcast against C loaded vectors per step.
// Scores are a query row against dim-major keys ((wr, ws) = (row stride, 1), s over the head
// dim); weighted sums are score rows ((n_pad, 1)) or columns ((1, n_pad)) against token rows.
template <typename Isa, typename T, int R, int C>
DINAT_M2F_INLINE void block_product(const T* w, int64_t wr, int64_t ws, int count, const T* xs,
                                    int64_t x_stride, int offset,
                                    typename SimdOf<Isa, T>::Vec (&acc)[R][C]) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = V{};
  for (int s = 0; s < count; ++s) {
    V y[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      y[c] = load<V>(xs + s * x_stride + offset + c * L);
      Isa::in_register(y[c]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V b = Isa::broadcast(w + r * wr + s * ws);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] += b * y[c];
    }
  }
}

// out[r][c] = ls * sum_d a[r][d] * bt[d][c] (+ bias[r][c] + mask[c], where given) for R rows and
// the K vectors of key columns from c0.
template <typename Isa, typename T, int R, int K>
DINAT_M2F_INLINE void score_block(const T* a, int a_stride, int dim, const T* bt, int bt_stride,
                                  int c0, T ls, const T* const* bias, const T* mask, T* out,
                                  int out_stride) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  V acc[R][K];
  block_product<Isa, T, R, K>(a, a_stride, 1, dim, bt, bt_stride, c0, acc);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int x = 0; x < K; ++x) {
      V s = acc[r][x] * ls;
      if (bias) s += load<V>(bias[r] + c0 + x * L);
      if (mask) s += load<V>(mask + c0 + x * L);
      store(out + int64_t(r) * out_stride + c0 + x * L, s);
    }
}

// The R rows' score rows, all key vectors, K at a time.
template <typename Isa, typename T, int R>
DINAT_M2F_INLINE void score_rows_of(const T* a, int a_stride, int dim, const T* bt, int n_pad, T ls,
                                    const T* const* bias, const T* mask, T* out) {
  constexpr int L = SimdOf<Isa, T>::kLanes, K = score_keys<Isa>();
  const int vectors = n_pad / L;
  auto block = [&](auto nk, int x) DINAT_M2F_INLINE_LAMBDA {
    score_block<Isa, T, R, decltype(nk)::value>(a, a_stride, dim, bt, n_pad, x * L, ls, bias, mask,
                                                out, n_pad);
  };
  for_blocks<K>(vectors, block);
}

// Score rows of all n rows of `a` (token-major, stride a_stride) against dim-major `bt`:
// out[t] = ls * a[t] . bt, plus the bias and the padding's mask for the logits, in blocks of
// score_rows<Isa>() rows.
template <typename Isa, typename T>
DINAT_M2F_INLINE void all_scores(const Group<T>& x, const T* a, int a_stride, int dim, const T* bt,
                                 T ls, bool logits, T* out) {
  constexpr int R = score_rows<Isa>();
  const bool bias = logits && x.bias;
  auto rows = [&](auto nr, int t) DINAT_M2F_INLINE_LAMBDA {
    constexpr int kR = decltype(nr)::value;
    const T* bias_rows[kR];
    for (int r = 0; r < kR; ++r) bias_rows[r] = bias ? x.bias + x.bias_at[t + r] : nullptr;
    score_rows_of<Isa, T, kR>(a + int64_t(t) * a_stride, a_stride, dim, bt, x.n_pad, ls,
                              bias ? bias_rows : nullptr, logits ? x.mask : nullptr,
                              out + int64_t(t) * x.n_pad);
  };
  for_blocks<R>(x.n, rows);
}

// out[r][offset ...] = sum_s w[r * wr + s * ws] * xs[s][offset ...] (times scale[r], where
// given) for R rows and the head-dim chunk of D vectors at `offset`, s < count. With (wr, ws) =
// (n_pad, 1) the weights are score rows (p.v, ds.k); with (1, n_pad) score columns (the
// key-side gradients: p^T.do, ds^T.q).
template <typename Isa, typename T, int R, int D>
DINAT_M2F_INLINE void sum_block(const T* w, int64_t wr, int64_t ws, int count, const T* xs,
                                int x_stride, int offset, const T* scale, T* out, int out_stride) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  V acc[R][D];
  block_product<Isa, T, R, D>(w, wr, ws, count, xs, x_stride, offset, acc);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < D; ++c)
      store(out + int64_t(r) * out_stride + offset + c * L,
            scale ? acc[r][c] * scale[r] : acc[r][c]);
}

// The weighted sums of all `rows` rows (see sum_block), blocks of sum_rows<Isa>() rows by
// chunks of up to two vectors of a head dim padded to `padded`.
template <typename Isa, typename T>
DINAT_M2F_INLINE void all_sums(int rows, const T* w, int64_t wr, int64_t ws, int count, const T* xs,
                               int padded, T* out, const T* scale = nullptr) {
  constexpr int L = SimdOf<Isa, T>::kLanes, R = sum_rows<Isa>();
  auto block = [&](auto nr, int r) DINAT_M2F_INLINE_LAMBDA {
    constexpr int kR = decltype(nr)::value;
    const T* wb = w + r * wr;
    const T* sb = scale ? scale + r : nullptr;
    T* ob = out + int64_t(r) * padded;
    int c = 0;
    for (; c + 2 * L <= padded; c += 2 * L)
      sum_block<Isa, T, kR, 2>(wb, wr, ws, count, xs, padded, c, sb, ob, padded);
    if (c < padded) sum_block<Isa, T, kR, 1>(wb, wr, ws, count, xs, padded, c, sb, ob, padded);
  };
  for_blocks<R>(rows, block);
}

// One lane holding op over all of v's lanes, in log2(lanes) shuffles (the lanes of a score
// row are keys, and each query needs the largest and the sum of its row).
template <typename Isa, typename T, typename Op>
DINAT_M2F_INLINE T lane_reduce(typename SimdOf<Isa, T>::Vec v, Op op) {
  using I = typename SimdOf<Isa, T>::Index;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  static_assert(L == 8 || L == 16, "float vectors of 8 or 16 lanes");
  if constexpr (L == 16)
    v = op(v, __builtin_shuffle(v, I{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}));
  if constexpr (L == 16) {
    v = op(v, __builtin_shuffle(v, I{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11}));
    v = op(v, __builtin_shuffle(v, I{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13}));
    v = op(v, __builtin_shuffle(v, I{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14}));
  } else {
    v = op(v, __builtin_shuffle(v, I{4, 5, 6, 7, 0, 1, 2, 3}));
    v = op(v, __builtin_shuffle(v, I{2, 3, 0, 1, 6, 7, 4, 5}));
    v = op(v, __builtin_shuffle(v, I{1, 0, 3, 2, 5, 4, 7, 6}));
  }
  return v[0];
}

// out[t] = softmax(q[t] . k + bias[t]) v and lse[t] (base 2) for every query t of the group:
// the logits, each row's largest and its probabilities (not yet divided by their sum), then
// the weighted sums, each output row divided by its sum as it is stored.
template <typename Isa, typename T>
DINAT_M2F_INLINE void forward_group(const Group<T>& x) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  const int vectors = x.n_pad / L;
  all_scores<Isa>(x, x.q, x.q_pad, x.dim, x.kt, x.logit_scale, true, x.scores);
  auto vmax = [](V a, V b) DINAT_M2F_INLINE_LAMBDA { return cpu_tiles::vmax(a, b); };
  auto add = [](V a, V b) DINAT_M2F_INLINE_LAMBDA { return a + b; };
  for (int t = 0; t < x.n; ++t) {
    T* s = x.scores + int64_t(t) * x.n_pad;
    V mv = load<V>(s);
    for (int c = 1; c < vectors; ++c) mv = vmax(mv, load<V>(s + c * L));
    const T m = lane_reduce<Isa, T>(mv, vmax);
    V sum = V{};
    for (int c = 0; c < vectors; ++c) {
      const V p = cpu_tiles::exp2(load<V>(s + c * L) - m) * load<V>(x.keep + c * L);
      store(s + c * L, p);
      sum += p;
    }
    x.maxima[t] = m;
    x.inv[t] = lane_reduce<Isa, T>(sum, add);
  }
  for (int t = x.n; t < x.n_pad; ++t) x.maxima[t] = T(0), x.inv[t] = T(1);
  for (int c = 0; c < vectors; ++c) {
    const V sum = load<V>(x.inv + c * L);
    store(x.lse + c * L, load<V>(x.maxima + c * L) + cpu_tiles::log2(sum));
    store(x.inv + c * L, splat<V>(T(1)) / sum);
  }
  all_sums<Isa>(x.n, x.scores, x.n_pad, 1, x.n, x.v, x.v_pad, x.out, x.inv);
}

// Every gradient of the group: the scores recomputed from lse, p = exp2(s - lse),
// ds = p * (grad_out . v - delta); grad_q = scale * ds.k, grad_k = scale * ds^T.q,
// grad_v = p^T.grad_out, and ds itself for the bias.
template <typename Isa, typename T>
DINAT_M2F_INLINE void backward_group(const Group<T>& x) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  const int vectors = x.n_pad / L;
  all_scores<Isa>(x, x.q, x.q_pad, x.dim, x.kt, x.logit_scale, true, x.scores);
  all_scores<Isa>(x, x.g, x.v_pad, x.dim_v, x.vt, T(1), false, x.grads);
  for (int t = 0; t < x.n; ++t) {
    const V lse = splat<V>(x.lse_in[t]), delta = splat<V>(x.delta[t]);
    T* s = x.scores + int64_t(t) * x.n_pad;
    T* gs = x.grads + int64_t(t) * x.n_pad;
    T* gb = x.grad_bias ? x.grad_bias + int64_t(t) * x.n_pad : nullptr;
    for (int c = 0; c < vectors; ++c) {
      const V p = cpu_tiles::exp2(load<V>(s + c * L) - lse) * load<V>(x.keep + c * L);
      const V ds = p * (load<V>(gs + c * L) - delta);
      store(s + c * L, p);
      store(gs + c * L, ds * x.scale);
      if (gb) store(gb + c * L, ds);
    }
  }
  all_sums<Isa>(x.n, x.grads, x.n_pad, 1, x.n, x.k, x.q_pad, x.grad_q);
  all_sums<Isa>(x.n, x.grads, 1, x.n_pad, x.n, x.q, x.q_pad, x.grad_k);
  all_sums<Isa>(x.n, x.scores, 1, x.n_pad, x.n, x.g, x.v_pad, x.grad_v);
}

}  // namespace cpu_dense
}  // namespace na
}  // namespace dinat_m2f
