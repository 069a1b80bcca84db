// The register-level kernels of fused NA on the CPU: one query row of one (batch, head,
// dilation group) sub-map at a time, in group coordinates, on packed float (or double) rows.
// Host side (packing, tasks, windows from na_index.h): na_cpu_fused.cpp.
//
// A row's queries are processed in tiles of kLanes consecutive columns. Each query sees the
// key rows of its row's window (the same kh rows for the whole row) and, on each of them, the
// kw columns ws[q] .. ws[q] + kw - 1. Two layouts serve the two kinds of product:
//
//  * scores (q.k, and do.v in the backward) put the tile's queries in the vector lanes: with
//    the query row dim-major (qt[d][col]) and each key row dim-major (kt[d][col]), neighbor j
//    of lane l is key column ws[w0 + l] + j. Inside the map the tile's windows start at
//    consecutive columns, so each (d, j) is one unaligned load at ws[w0] + j; at the borders,
//    where windows shift inward, the same load is permuted by ws[w0 + l] - ws[w0] (always in
//    0 .. kLanes-1, since window starts grow by at most one per column), or, where every
//    window of the tile starts at one column, broadcast. No neighbor is computed that the
//    query does not use, and no border case is special.
//  * weighted sums (p.v; ds.k, and the p.do / ds.q scatters of the backward) put the head dim in
//    the lanes and take two neighbouring queries a, a+1 together: their windows start at most
//    one column apart, so they share kw (+1) key columns, each loaded once for both. The
//    AVX-512 build gathers the key-side gradients per key column instead (column_gather): a
//    query vector loaded once for the whole window, the key rows' sums in its 32 registers.
//
// Scores of a tile live in a small buffer (kh rows of kw + 2 columns of kLanes values, the two
// extra columns zero), so the weighted sums read a query's weight of key column c as
// buffer[i][c - (ws[q] - ws[a]) + 1][lane] without any test.
//
// Every function here is always_inline: the entry points (na_cpu_fused.cpp) are compiled for
// AVX-512 (16-float vectors), AVX2 + FMA and the baseline ISA (8 floats or 4 doubles), and
// whatever they inline takes their ISA. The code is GCC vector extensions, but for a broadcast
// from memory, which they compile to element inserts: that one comes from the `Isa` parameter
// (Avx512, Avx2 or Baseline), which also sets the vector width.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../common/cpu_simd.h"  // DINAT_M2F_INLINE, DINAT_M2F_INLINE_LAMBDA

namespace dinat_m2f {
namespace na {
namespace cpu_tiles {

// Vectors of `Bytes` bytes (GCC vector extensions): 32 (8 floats or 4 doubles per register)
// for the AVX2 and baseline builds, 64 (16 floats) for the AVX-512 one.
template <typename T>
struct LaneIndex;
template <>
struct LaneIndex<float> {
  typedef int32_t type;
};
template <>
struct LaneIndex<double> {
  typedef int64_t type;
};
template <typename T, int Bytes = 32>
struct Simd {
  typedef T Vec __attribute__((vector_size(Bytes)));
  typedef typename LaneIndex<T>::type Index __attribute__((vector_size(Bytes)));
  static constexpr int kLanes = Bytes / int(sizeof(T));
};
// The vectors an instruction set's kernels use.
template <typename Isa, typename T>
using SimdOf = Simd<T, Isa::kBytes>;

template <typename V, typename T>
DINAT_M2F_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
DINAT_M2F_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// A constant in every lane (folded at compile time).
template <typename V, typename T>
DINAT_M2F_INLINE V splat(T x) {
  return x - V{};  // x - 0 is x for every x
}

// *p in every lane: vbroadcastss / vbroadcastsd from memory. Written as assembly because an
// intrinsic would need the AVX target on every function it is inlined through; this is only
// ever inlined into the AVX2 entry points.
struct Avx2 {
  static constexpr int kBytes = 32;
  static constexpr int kRegisters = 16;
  // Keeps the compiler from folding a load into each of the FMAs that use it (memory operands),
  // which would load the same vector once per FMA.
  template <typename V>
  static DINAT_M2F_INLINE void in_register(V& v) {
    asm("" : "+x"(v));
  }
  static DINAT_M2F_INLINE Simd<float>::Vec broadcast(const float* p) {
    Simd<float>::Vec v;
    asm("vbroadcastss %1, %0" : "=x"(v) : "m"(*p));
    return v;
  }
  static DINAT_M2F_INLINE Simd<double>::Vec broadcast(const double* p) {
    Simd<double>::Vec v;
    asm("vbroadcastsd %1, %0" : "=x"(v) : "m"(*p));
    return v;
  }
  // a non-temporal store (p aligned to the vector)
  static DINAT_M2F_INLINE void stream(float* p, const Simd<float>::Vec& v) {
    asm("vmovntps %1, %0" : "=m"(*reinterpret_cast<Simd<float>::Vec*>(p)) : "x"(v));
  }
};

// 16 floats per vector and 32 registers (zmm0-31), floats only; inlined only into the
// AVX-512 entry points.
struct Avx512 {
  static constexpr int kBytes = 64;
  static constexpr int kRegisters = 32;
  template <typename V>
  static DINAT_M2F_INLINE void in_register(V& v) {
    asm("" : "+v"(v));
  }
  static DINAT_M2F_INLINE Simd<float, 64>::Vec broadcast(const float* p) {
    Simd<float, 64>::Vec v;
    asm("vbroadcastss %1, %0" : "=v"(v) : "m"(*p));
    return v;
  }
  static DINAT_M2F_INLINE void stream(float* p, const Simd<float, 64>::Vec& v) {
    asm("vmovntps %1, %0" : "=m"(*reinterpret_cast<Simd<float, 64>::Vec*>(p)) : "v"(v));
  }
};

struct Baseline {
  static constexpr int kBytes = 32;
  static constexpr int kRegisters = 16;
  template <typename V>
  static DINAT_M2F_INLINE void in_register(V&) {}  // a 32-byte vector is two SSE registers
  template <typename T>
  static DINAT_M2F_INLINE typename Simd<T>::Vec broadcast(const T* p) {
    typename Simd<T>::Vec v = {};
    v[0] = *p;
    return __builtin_shuffle(v, typename Simd<T>::Index{});
  }
  template <typename T>
  static DINAT_M2F_INLINE void stream(T* p, const typename Simd<T>::Vec& v) {
    store(p, v);  // the fallback build keeps plain stores
  }
};

// store() for out / grad_q rows; non-temporal where the row says so (see Row::stream).
template <typename Isa, typename V, typename T>
DINAT_M2F_INLINE void store_out(T* p, const V& v, bool stream) {
  if (stream)
    Isa::stream(p, v);
  else
    store(p, v);
}

// max(a, b) per lane; a NaN in `a` stays (so NaN inputs give NaN outputs).
template <typename V>
DINAT_M2F_INLINE V vmax(const V& a, const V& b) {
  return a < b ? b : a;
}

// 2^x per lane for x <= 0 (scores minus their maximum). Floats: 2^round(x) times a degree-6
// polynomial for 2^f, f in [-0.5, 0.5] (relative error 1e-7); x below -126 gives 2^-126.
// Doubles (gradcheck, accuracy tests) take the library's exp2 lane by lane.
template <typename V>
DINAT_M2F_INLINE V exp2(V x) {
  using T = typename std::remove_reference<decltype(x[0])>::type;
  constexpr int kBytes = int(sizeof(V));
  if constexpr (std::is_same<T, double>::value) {
    V y;
    for (int l = 0; l < Simd<T, kBytes>::kLanes; ++l) y[l] = std::exp2(x[l]);
    return y;
  } else {
    using I = typename Simd<float, kBytes>::Index;
    x = vmax(x, splat<V>(-126.0f));
    const V magic = splat<V>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const V r = (x + magic) - magic;
    const V f = x - r;
    V p = splat<V>(0x1.41d318p-13f);
    p = p * f + 0x1.5f455ep-10f;
    p = p * f + 0x1.3b2dbcp-7f;
    p = p * f + 0x1.c6aed4p-5f;
    p = p * f + 0x1.ebfbdap-3f;
    p = p * f + 0x1.62e430p-1f;
    p = p * f + 1.0f;
    const I bits = (__builtin_convertvector(r, I) + 127) << 23;
    V scale;
    std::memcpy(&scale, &bits, sizeof(V));
    return p * scale;
  }
}

// log2(x) per lane for positive normal x (softmax sums, at least 1); NaN stays NaN. Floats:
// x = 2^e * m with m in [sqrt(1/2), sqrt(2)), and log2 m = 2 / ln 2 * atanh(s), s = (m - 1) /
// (m + 1), |s| < 0.172, from its series to s^9 (the next term is 2e-9 of the sum). The library's
// log2f per lane took 2-3% of a forward. Doubles take the library's log2 lane by lane.
template <typename V>
DINAT_M2F_INLINE V log2(V x) {
  using T = typename std::remove_reference<decltype(x[0])>::type;
  constexpr int kBytes = int(sizeof(V));
  if constexpr (std::is_same<T, double>::value) {
    V y;
    for (int l = 0; l < Simd<T, kBytes>::kLanes; ++l) y[l] = std::log2(x[l]);
    return y;
  } else {
    using I = typename Simd<float, kBytes>::Index;
    I bits;
    std::memcpy(&bits, &x, sizeof(V));
    const I exponent = ((bits >> 23) & 0xff) - 127;
    const I mantissa = (bits & 0x7fffff) | 0x3f800000;  // m in [1, 2)
    V m;
    std::memcpy(&m, &mantissa, sizeof(V));
    const I high = m > splat<V>(0x1.6a09e6p+0f);  // -1 where m moves to [sqrt(1/2), 1)
    m = high ? m * 0.5f : m;
    const V e = __builtin_convertvector(exponent - high, V);
    const V s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    V p = splat<V>(0x1.484b14p-2f);  // 2 / (9 ln 2)
    p = p * s2 + 0x1.a61762p-2f;     // 2 / (7 ln 2)
    p = p * s2 + 0x1.2776c6p-1f;     // 2 / (5 ln 2)
    p = p * s2 + 0x1.ec709ep-1f;     // 2 / (3 ln 2)
    p = p * s2 + 0x1.715476p+1f;     // 2 / ln 2
    const V y = e + s * p;
    return x == x ? y : x;
  }
}

// Token-major rows (one per key row of the window, or one per query row): column c of row i
// starts at ptr[i] + c * col, and holds the head dim contiguously, padded to a multiple of
// kLanes (zeros). They may point straight into a float input tensor.
template <typename T>
struct TokenRows {
  const T* const* ptr;
  int64_t col;
};

// Everything one query row needs; pointers into the host's buffers or the tensors. Columns
// are in group coordinates; "dim-major" rows are [d][col] with row stride `q_stride` (query
// side) or `k_stride` (key side), padded so that a vector load at any window column stays
// inside.
template <typename T>
struct Row {
  int cols;          // queries (and keys) in the row
  int kh, kw;        // window
  int dim;           // head dim of query and key (the scores' reduction)
  int dim_v;         // head dim of value (and grad_out)
  int q_stride;      // dim-major query-side rows: >= cols rounded up to kLanes
  int k_stride;      // dim-major key-side rows: >= cols + kLanes
  int k_dim, v_dim;  // head dims of token-major key-side / value-side rows, padded
  const int* ws;     // window start of each query column (q_stride entries, see GroupAxis)
  const T* bias;     // [i][j][col] RPB of this row's windows (times log2 e), or null

  // forward and backward
  const T* qt;         // dim-major query row, times scale * log2 e
  const T* const* kt;  // kh dim-major key rows (the row's window)
  T* scores;           // tile buffer: kh * (kw + 2) * kLanes, columns 0 and kw + 1 zero

  // forward
  TokenRows<T> v;  // kh value rows
  T* out;          // output row: column c at out + c * out_col
  int64_t out_col;
  T* lse;  // log2-sum-exp per query: column c at lse + c * lse_col
  int64_t lse_col;

  // out (forward) or grad_q (backward) written with non-temporal stores, which do not read the
  // lines first; the rows must then be aligned to the vector size
  bool stream;

  // cache lines to prefetch while this row computes (the next rows' inputs), or none
  const char* const* ahead;
  int ahead_count;

  // backward
  T scale;             // of the logits
  const T* lse_in;     // as written by the forward (q_stride, padded with zeros)
  const T* delta;      // rowsum(grad_out * out) per query (q_stride)
  const T* gt;         // dim-major grad_out row
  const T* const* vt;  // kh dim-major value rows
  TokenRows<T> k;      // kh key rows
  TokenRows<T> q;      // the query row (one pointer)
  TokenRows<T> g;      // the grad_out row (one pointer)
  T* grads;            // tile buffer like `scores`: the score gradients (times scale)
  T* grad_q;           // grad_query row (column c at grad_q + c * grad_q_col), or null
  int64_t grad_q_col;
  T* const* grad_k;    // kh accumulators (token-major, like `k`), null entries: not this
  int64_t grad_k_col;  // task's rows
  T* const* grad_v;    // likewise for value
  int64_t grad_v_col;
  T* grad_bias;  // [i][j][col] accumulator like `bias`, or null
};

// dst[d * dst_stride + c] = scale * src[c * col + d] for c < cols, d < dim: a row turned
// dim-major, 8 x 8 blocks at a time for floats. The last block of a row whose length is not a
// multiple of 8 repeats its last column into the padding (dst_stride covers it).
template <typename T>
DINAT_M2F_INLINE void transpose_row(const T* src, int64_t col, int cols, int dim, T scale, T* dst,
                                    int dst_stride) {
  int d0 = 0;
  if constexpr (std::is_same<T, float>::value) {
    using V = Simd<float>::Vec;
    using I = Simd<float>::Index;
    for (; d0 + 8 <= dim; d0 += 8) {
      for (int c0 = 0; c0 < cols; c0 += 8) {
        // The tokens two blocks on, on the first pass: read from the tensor (the forward's q
        // and k, the backward's v), a row of many heads or of a dilated group has its tokens
        // 512 bytes or more apart, which the core's prefetchers do not follow. 1.01-1.06x on a
        // backward that still read q, k and grad_out this way (docs/benchmarks.md, step 20).
        if (d0 == 0)
          for (int c = c0 + 16; c < std::min(c0 + 24, cols); ++c)
            for (int o = 0; o < dim; o += 64 / int(sizeof(T)))
              __builtin_prefetch(src + c * col + o);
        V r[8], t[8], u[8];
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c)
          r[c] = load<V>(src + (c0 + c < cols ? c0 + c : cols - 1) * col + d0);
#pragma GCC unroll 4
        for (int c = 0; c < 8; c += 2) {
          t[c] = __builtin_shuffle(r[c], r[c + 1], I{0, 8, 1, 9, 4, 12, 5, 13});
          t[c + 1] = __builtin_shuffle(r[c], r[c + 1], I{2, 10, 3, 11, 6, 14, 7, 15});
        }
#pragma GCC unroll 2
        for (int c = 0; c < 8; c += 4) {
          u[c] = __builtin_shuffle(t[c], t[c + 2], I{0, 1, 8, 9, 4, 5, 12, 13});
          u[c + 1] = __builtin_shuffle(t[c], t[c + 2], I{2, 3, 10, 11, 6, 7, 14, 15});
          u[c + 2] = __builtin_shuffle(t[c + 1], t[c + 3], I{0, 1, 8, 9, 4, 5, 12, 13});
          u[c + 3] = __builtin_shuffle(t[c + 1], t[c + 3], I{2, 3, 10, 11, 6, 7, 14, 15});
        }
#pragma GCC unroll 4
        for (int d = 0; d < 4; ++d) {
          const V lo = __builtin_shuffle(u[d], u[d + 4], I{0, 1, 2, 3, 8, 9, 10, 11});
          const V hi = __builtin_shuffle(u[d], u[d + 4], I{4, 5, 6, 7, 12, 13, 14, 15});
          store(dst + (d0 + d) * dst_stride + c0, lo * scale);
          store(dst + (d0 + d + 4) * dst_stride + c0, hi * scale);
        }
      }
    }
  }
  for (int d = d0; d < dim; ++d)
    for (int c = 0; c < cols; ++c) dst[d * dst_stride + c] = src[c * col + d] * scale;
}

// Issues a row's prefetches a few at a time between its score chunks: issued at once they
// would fill the core's miss buffers and stall the kernel as the loads themselves did.
struct Ahead {
  const char* const* lines;
  int count, next, per_step;
  DINAT_M2F_INLINE void step() {
    for (int n = 0; n < per_step && next < count; ++n) __builtin_prefetch(lines[next++]);
  }
};

// The prefetches of n rows (windows `offset` key rows below the first's, x the first row)
// spread over their tiles' steps: the key rows in tile_scores and the query pairs (L / 2 per
// row) in the weighted sums. Spread over the key rows alone, some 40 prefetches went out at
// a time on a 128 x 128 map, and waiting for miss buffers took a sixth of the row kernel;
// spread over the pairs too, the forward ran 1.02-1.10x as fast (docs/benchmarks.md, step 20).
template <typename Isa, typename T>
DINAT_M2F_INLINE Ahead ahead_of(const Row<T>& x, int n, const int* offset) {
  constexpr int L = SimdOf<Isa, T>::kLanes;
  const int steps = (x.cols + L - 1) / L * (x.kh + offset[n - 1] + n * L / 2);
  return {x.ahead, x.ahead_count, 0, (x.ahead_count + steps - 1) / steps};
}

// ---------------------------------------------------------------------------------------------
// Scores: lanes over queries.

// How the windows of a tile's queries start, which decides how a key vector reaches the lanes:
// at consecutive columns (the interior: one unaligned load), all at one column (a group no
// wider than the kernel, where every query sees the whole row: one broadcast per neighbor,
// much cheaper than a permute on AMD's cores), or otherwise (the borders: load and permute).
enum Keys { kConsecutive, kSameStart, kShifted };

// One chunk of JB neighbor columns of one key row, for the R (1 to 4) query rows that share it:
// acc[r][j] = init[r][j] + sum_d a[r][d] * b[d][j]. `a[r]` points at the tile's first column
// of a dim-major query-side row; `b` at column ws[w0] + j0 of a dim-major key-side row. The
// rows load each key vector once for all: an unaligned load that mostly straddles two cache
// lines, it costs more than the R aligned query loads. kKeys: how the tile's windows start.
template <typename Isa, typename T, int R, int JB, int kKeys>
DINAT_M2F_INLINE void score_chunk(const T* const* a, int a_stride, const T* b, int b_stride,
                                  int dim, const typename SimdOf<Isa, T>::Index& shift,
                                  const T* const* init, int init_stride, T* const* out) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  V acc[R][JB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < JB; ++j) acc[r][j] = init[r] ? load<V>(init[r] + j * init_stride) : V{};
  for (int d = 0; d < dim; ++d) {
    V x[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) x[r] = load<V>(a[r] + d * a_stride);
    const T* bd = b + d * b_stride;
#pragma GCC unroll 8
    for (int j = 0; j < JB; ++j) {
      V y;
      if (kKeys == kSameStart)
        y = Isa::broadcast(bd + j);
      else if (kKeys == kShifted)
        y = __builtin_shuffle(load<V>(bd + j), shift);
      else
        y = load<V>(bd + j);
      if (R > 1) Isa::in_register(y);  // one load for every row
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][j] += x[r] * y;
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < JB; ++j) store(out[r] + j * L, acc[r][j]);
}

// The most query rows whose score chunks share their key loads (see score_chunk), and the
// most neighbor columns per chunk: R * JB accumulators, R query vectors, the key vector and
// the permutation must fit in the ISA's registers (and the cases of score_chunk_n). Four rows
// of 7 columns take 33 of AVX-512's 32: one query vector is reloaded, which costs less than a
// second chunk (standalone, 2 x 7 columns: 106 GFLOP/s, 3 x 7: 129, 4 x 7: 137, 4 x 4: 131).
constexpr int kMaxRows = 4;
template <typename Isa>
constexpr int max_rows() {
  return Isa::kRegisters >= 32 ? kMaxRows : 2;
}
constexpr int max_chunk(int registers, int rows, int keys) {
  if (registers >= 32) return rows <= 3 ? 8 : (keys == kShifted ? 6 : 7);
  return rows == 1 ? 8 : (keys == kShifted ? 5 : 6);
}

template <typename Isa, typename T, int R, int kKeys>
DINAT_M2F_INLINE void score_chunk_n(int n, const T* const* a, int a_stride, const T* b,
                                    int b_stride, int dim,
                                    const typename SimdOf<Isa, T>::Index& shift,
                                    const T* const* init, int init_stride, T* const* out) {
#define DINAT_M2F_SCORE_CASE(N)                                                                 \
  case N:                                                                                       \
    if constexpr (N <= max_chunk(Isa::kRegisters, R, kKeys))                                    \
      score_chunk<Isa, T, R, N, kKeys>(a, a_stride, b, b_stride, dim, shift, init, init_stride, \
                                       out);                                                    \
    break;
  switch (n) {
    DINAT_M2F_SCORE_CASE(1)
    DINAT_M2F_SCORE_CASE(2)
    DINAT_M2F_SCORE_CASE(3)
    DINAT_M2F_SCORE_CASE(4)
    DINAT_M2F_SCORE_CASE(5)
    DINAT_M2F_SCORE_CASE(6)
    DINAT_M2F_SCORE_CASE(7)
    DINAT_M2F_SCORE_CASE(8)
  }
#undef DINAT_M2F_SCORE_CASE
}

// Where a tile of queries looks: its first window start, how the others start (Keys), and
// each lane's offset from the first in `shift`.
template <typename Isa, typename T>
struct Tile {
  int w0;     // first query column
  int lanes;  // queries of the tile inside the row
  int base;   // ws[w0]
  int keys;   // Keys
  typename SimdOf<Isa, T>::Index shift;
};

template <typename Isa, typename T>
DINAT_M2F_INLINE Tile<Isa, T> tile_at(const Row<T>& row, int w0) {
  constexpr int L = SimdOf<Isa, T>::kLanes;
  Tile<Isa, T> t;
  t.w0 = w0;
  t.lanes = row.cols - w0 < L ? row.cols - w0 : L;
  t.base = row.ws[w0];
  bool consecutive = true, same = true;
  for (int l = 0; l < L; ++l) {
    t.shift[l] = row.ws[w0 + l] - t.base;
    consecutive &= t.shift[l] == l;
    same &= t.shift[l] == 0 || l >= t.lanes;  // lanes past the row's end are never used
  }
  t.keys = consecutive ? kConsecutive : same ? kSameStart : kShifted;
  return t;
}

// What one query row contributes to a score computation: its dim-major query-side row, its kh
// dim-major key-side rows, its bias table (or null) and its tile buffer.
template <typename T>
struct ScoreSide {
  const T* a;
  const T* const* b;
  const T* bias;
  T* out;
};

// out[i][1 + j][lane] = sum_d a[d][lane] * b_i[d][ws[lane] + j] (+ bias) for the tile, in
// each of the n (1 to max_rows) query rows `sides`, whose windows start `offset[r]` key rows
// below the first row's (0 for the first, then nondecreasing: consecutive rows' windows move
// down by at most one row): each key row is read once for all the rows whose windows hold it.
template <typename Isa, typename T>
DINAT_M2F_INLINE void tile_scores(const Row<T>& row, const Tile<Isa, T>& t, int dim,
                                  const ScoreSide<T>* const* sides, int n, const int* offset,
                                  Ahead* ahead = nullptr) {
  constexpr int L = SimdOf<Isa, T>::kLanes;
  constexpr int kRows = max_rows<Isa>();
  const int kh = row.kh, kw = row.kw;
  for (int u = 0; u < offset[n - 1] + kh; ++u) {
    if (ahead) ahead->step();
    // the rows that use key row u, as their window's row u - offset[r]: a run of consecutive
    // rows, never empty
    const ScoreSide<T>* users[kRows];
    int index[kRows], n_users = 0;
    for (int r = 0; r < n; ++r)
      if (u >= offset[r] && u - offset[r] < kh)
        users[n_users] = sides[r], index[n_users++] = u - offset[r];
    const T* key = users[0]->b[index[0]] + t.base;
    const int most = max_chunk(Isa::kRegisters, n_users, t.keys);
    const int chunks = (kw + most - 1) / most;
    for (int c = 0, j0 = 0; c < chunks; ++c) {
      const int cols = (kw - j0 + (chunks - c) - 1) / (chunks - c);
      const T* a[kRows];
      const T* init[kRows];
      T* out[kRows];
      for (int r = 0; r < n_users; ++r) {
        const ScoreSide<T>& side = *users[r];
        a[r] = side.a + t.w0;
        init[r] = side.bias ? side.bias + (index[r] * kw + j0) * row.q_stride + t.w0 : nullptr;
        out[r] = side.out + (index[r] * (kw + 2) + 1 + j0) * L;
      }
      // score_chunk_n's template arguments from the run-time pair (rows, keys)
      auto chunk = [&](auto rows, auto keys) DINAT_M2F_INLINE_LAMBDA {
        score_chunk_n<Isa, T, decltype(rows)::value, decltype(keys)::value>(
            cols, a, row.q_stride, key + j0, row.k_stride, dim, t.shift, init, row.q_stride, out);
      };
      auto with_keys = [&](auto rows) DINAT_M2F_INLINE_LAMBDA {
        if (t.keys == kConsecutive)
          chunk(rows, std::integral_constant<int, kConsecutive>());
        else if (t.keys == kSameStart)
          chunk(rows, std::integral_constant<int, kSameStart>());
        else
          chunk(rows, std::integral_constant<int, kShifted>());
      };
      switch (n_users) {
        case 1:
          with_keys(std::integral_constant<int, 1>());
          break;
        case 2:
          with_keys(std::integral_constant<int, 2>());
          break;
        case 3:
          if constexpr (kRows >= 3) with_keys(std::integral_constant<int, 3>());
          break;
        default:
          if constexpr (kRows >= 4) with_keys(std::integral_constant<int, 4>());
          break;
      }
      j0 += cols;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Weighted sums: lanes over the head dim, two queries a and a + 1 at once.

// Weights of query a's and a+1's key columns c = 0 .. kw - 1 + s on key row i, where
// s = ws[a + 1] - ws[a] (0 or 1) and column c is key column ws[a] + c.
template <typename T>
struct PairWeights {
  const T* a;    // a[i * row_stride + c * L]
  int b_offset;  // query a + 1's weight of the same column: a[... + b_offset]
  int row_stride;
  int cols;
};

template <typename Isa, typename T>
DINAT_M2F_INLINE PairWeights<T> pair_weights(const Row<T>& row, const T* buffer, int lane, int s) {
  constexpr int L = SimdOf<Isa, T>::kLanes;
  const T* a = buffer + L + lane;  // column c of lane `lane` at (1 + c) * L
  return {a, 1 - s * L, (row.kw + 2) * L, row.kw + s};
}

// out_a = scale_a * sum_{i,c} wa[i][c] * x_i[ws_a + c], out_b likewise (kPair), over NV
// vectors of the head dim from `offset`.
template <typename Isa, typename T, int NV, bool kPair>
DINAT_M2F_INLINE void pair_sum(const PairWeights<T>& w, const TokenRows<T>& x, int kh, int ws_a,
                               int offset, T scale_a, T scale_b, T* out_a, T* out_b, bool stream) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  // Two sets of sums, one per key row of a pair, where one set has fewer than 8: each sum
  // waits an FMA latency (4 cycles) per column, and two FMA units need 8 in flight.
  constexpr int kSets = (kPair ? 2 : 1) * NV >= 8 ? 1 : 2;
  V acc_a[kSets][NV], acc_b[kSets][NV];
#pragma GCC unroll 2
  for (int h = 0; h < kSets; ++h)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc_a[h][n] = acc_b[h][n] = V{};
  auto column = [&](int h, const T* wa, const T* xc) DINAT_M2F_INLINE_LAMBDA {
    const V pa = Isa::broadcast(wa);
    const V pb = kPair ? Isa::broadcast(wa + w.b_offset) : V{};
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      V v = load<V>(xc + n * L);
      if (kPair) Isa::in_register(v);  // one load for both queries
      acc_a[h][n] += pa * v;
      if (kPair) acc_b[h][n] += pb * v;
    }
  };
  int i = 0;
  if constexpr (kSets == 2) {
    for (; i + 2 <= kh; i += 2) {
      // pointers stepped per column (see pair_scatter)
      const T* wa = w.a + i * w.row_stride;
      const T* const end = wa + w.cols * L;
      const T* xd = x.ptr[i + 1] + ws_a * x.col + offset;
      for (const T* xc = x.ptr[i] + ws_a * x.col + offset; wa != end;
           wa += L, xc += x.col, xd += x.col) {
        column(0, wa, xc);
        column(1, wa + w.row_stride, xd);
      }
    }
  }
  for (; i < kh; ++i) {
    const T* wa = w.a + i * w.row_stride;
    const T* const end = wa + w.cols * L;
    for (const T* xc = x.ptr[i] + ws_a * x.col + offset; wa != end; wa += L, xc += x.col)
      column(0, wa, xc);
  }
  if constexpr (kSets == 2) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc_a[0][n] += acc_a[1][n], acc_b[0][n] += acc_b[1][n];
  }
#pragma GCC unroll 4
  for (int n = 0; n < NV; ++n) {
    store_out<Isa>(out_a + offset + n * L, acc_a[0][n] * scale_a, stream);
    if (kPair) store_out<Isa>(out_b + offset + n * L, acc_b[0][n] * scale_b, stream);
  }
}

// acc_i[ws_a + c] += wa[i][c] * g_a + wb[i][c] * g_b (wa, wb: w's weights of a, a + 1) over NV
// vectors from `offset`, for the key rows whose accumulator is given (the transpose of pair_sum).
template <typename Isa, typename T, int NV, bool kPair>
DINAT_M2F_INLINE void pair_scatter(const PairWeights<T>& w, const T* g_a, const T* g_b,
                                   T* const* acc, int64_t acc_col, int kh, int ws_a, int offset) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  V ga[NV], gb[NV];
#pragma GCC unroll 4
  for (int n = 0; n < NV; ++n) {
    ga[n] = load<V>(g_a + offset + n * L);
    gb[n] = kPair ? load<V>(g_b + offset + n * L) : V{};
  }
  for (int i = 0; i < kh; ++i) {
    if (acc[i] == nullptr) continue;
    // Pointers stepped per column: indexed (wa + c * L, yi + c * acc_col), each column cost a
    // sign extension, a shift and address adds: 0-4% of a forward + backward
    // (docs/benchmarks.md, step 17).
    const T* wa = w.a + i * w.row_stride;
    const T* const end = wa + w.cols * L;
    for (T* yc = acc[i] + ws_a * acc_col + offset; wa != end; wa += L, yc += acc_col) {
      const V pa = Isa::broadcast(wa);
      const V pb = kPair ? Isa::broadcast(wa + w.b_offset) : V{};
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        V y = load<V>(yc + n * L);
        y += pa * ga[n];
        if (kPair) y += pb * gb[n];
        store(yc + n * L, y);
      }
    }
  }
}

// The last, partial block of for_blocks: body(std::integral_constant<int, left>(), i), found
// by counting down from kLeft (left < kMost, known only at run time).
template <int kLeft, typename Body>
DINAT_M2F_INLINE void last_block(int left, int i, Body& body) {
  if constexpr (kLeft > 0) {
    if (left == kLeft)
      body(std::integral_constant<int, kLeft>(), i);
    else
      last_block<kLeft - 1>(left, i, body);
  }
}

// Calls body(std::integral_constant<int, kMost>(), i) for i = 0, kMost, ... while a whole block
// of kMost fits in `count`, then body(std::integral_constant<int, r>(), i) once for the r left
// (0 < r < kMost): the register blocks' sizes are compile-time, their count is not.
template <int kMost, typename Body>
DINAT_M2F_INLINE void for_blocks(int count, Body&& body) {
  int i = 0;
  for (; i + kMost <= count; i += kMost) body(std::integral_constant<int, kMost>(), i);
  last_block<kMost - 1>(count - i, i, body);
}

// Runs `body(NV, offset)` over the padded head dim `dim` in chunks of at most kMost (1 to 4)
// vectors.
template <typename Isa, typename T, int kMost = 4, typename Body>
DINAT_M2F_INLINE void for_dim_chunks(int dim, Body&& body) {
  static_assert(kMost >= 1 && kMost <= 4, "chunks of 1 to 4 vectors");
  constexpr int L = SimdOf<Isa, T>::kLanes;
  for_blocks<kMost>(dim / L, [&](auto nv, int n) DINAT_M2F_INLINE_LAMBDA { body(nv, n * L); });
}

// Calls pair(lane, s, is_pair) for the tile's queries two by two.
template <typename Isa, typename T, typename Pair>
DINAT_M2F_INLINE void for_pairs(const Row<T>& row, const Tile<Isa, T>& t, Pair&& pair) {
  for (int l = 0; l < t.lanes; l += 2) {
    const int a = t.w0 + l;
    if (l + 1 < t.lanes)
      pair(l, row.ws[a + 1] - row.ws[a], std::true_type());
    else
      pair(l, 0, std::false_type());
  }
}

// The tile's contributions to the key rows' gradients, one key column at a time (pair_scatter's
// sums in another order), for R query rows (1, or 2 consecutive ones whose windows start S key
// rows apart): acc_u[col] += sum over the rows r and the tile's queries q whose windows hold
// col of w_rq[u - r * S][col - ws[q]] * x_rq, for NV vectors of the head dim from `offset`.
// weights[r] is row r's tile buffer (p or ds), vectors[r] its query-side row (grad_out or
// query, column q at vectors[r] + q * vec_col), acc the K + S key rows' accumulators (null:
// not this task's). Each query vector is loaded once for all K key rows, whose sums stay in
// registers, and each key column's accumulators are read and written once per tile and row
// pair instead of once per query pair that sees them: 1.2-1.3x on a kernel-11 or -13
// backward, 1.03-1.07x at kernel 7 with both rows of a pair in one pass (docs/benchmarks.md,
// step 17).
template <typename Isa, typename T, int K, int NV, int R, int S>
DINAT_M2F_INLINE void column_gather(const Row<T>& row, const Tile<Isa, T>& t,
                                    const T* const* weights, const T* const* vectors,
                                    int64_t vec_col, T* const* acc, int64_t acc_col, int offset) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  constexpr int U = K + S;
  const int kw = row.kw, stride = (kw + 2) * L;
  const int* ws = row.ws;
  const int q_end = t.w0 + t.lanes, col_end = ws[q_end - 1] + kw;
  int qa = t.w0, qb = t.w0;  // the queries [qa, qb) see column col
  for (int col = ws[t.w0]; col < col_end; ++col) {
    while (qb < q_end && ws[qb] <= col) ++qb;
    while (ws[qa] + kw <= col) ++qa;
    V sum[U][NV];
#pragma GCC unroll 14
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 2
      for (int n = 0; n < NV; ++n) sum[u][n] = V{};
    const T* xq[R];
    const T* w[R];  // query q's weight of column col on its window's first key row
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      xq[r] = vectors[r] + int64_t(qa) * vec_col + offset;
      w[r] = weights[r] + (1 + col - ws[qa]) * L + (qa - t.w0);
    }
    for (int q = qa; q < qb; ++q) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        V xv[NV];
#pragma GCC unroll 2
        for (int n = 0; n < NV; ++n) xv[n] = load<V>(xq[r] + n * L);
#pragma GCC unroll 13
        for (int i = 0; i < K; ++i) {
          const V p = Isa::broadcast(w[r] + i * stride);
#pragma GCC unroll 2
          for (int n = 0; n < NV; ++n) sum[i + r * S][n] += p * xv[n];
        }
      }
      // the next query: one lane on, its window ws[q + 1] - ws[q] columns later
      if (q + 1 < qb) {
        const int step = 1 - (ws[q + 1] - ws[q]) * L;
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) w[r] += step, xq[r] += vec_col;
      }
    }
#pragma GCC unroll 14
    for (int u = 0; u < U; ++u) {
      if (acc[u] == nullptr) continue;
      T* y = acc[u] + int64_t(col) * acc_col + offset;
#pragma GCC unroll 2
      for (int n = 0; n < NV; ++n) store(y + n * L, load<V>(y + n * L) + sum[u][n]);
    }
  }
}

// Whether column_gather takes the key-side gradients: K * 2 sums, two query vectors and a
// weight need 32 registers for K <= 13 (the AVX-512 build; the others scatter per query pair).
template <typename Isa>
constexpr bool gathers(int kh) {
  return Isa::kRegisters >= 32 && kh <= 13 && kh % 2 == 1;
}

// One product of gather_key_grads for the R rows `rows` (windows S key rows apart): grad_v
// from p and grad_out or, kKey, grad_k from ds and query, over the padded head dim two vectors
// at a time.
template <typename Isa, typename T, int K, int R, int S, bool kKey>
DINAT_M2F_INLINE void gather_product(const Row<T>* const* rows, const Tile<Isa, T>& t) {
  const Row<T>& x = *rows[0];
  const T* weights[R];
  const T* vectors[R];
  for (int r = 0; r < R; ++r) {
    weights[r] = kKey ? rows[r]->grads : rows[r]->scores;
    vectors[r] = (kKey ? rows[r]->q : rows[r]->g).ptr[0];
  }
  T* acc[K + S];  // the first row's K key rows, then the second's last
  for (int u = 0; u < K; ++u) acc[u] = (kKey ? x.grad_k : x.grad_v)[u];
  if constexpr (S == 1) acc[K] = (kKey ? rows[R - 1]->grad_k : rows[R - 1]->grad_v)[K - 1];
  const int64_t vec_col = (kKey ? x.q : x.g).col, acc_col = kKey ? x.grad_k_col : x.grad_v_col;
  const int dim = kKey ? x.k_dim : x.v_dim;
  for_dim_chunks<Isa, T, 2>(dim, [&](auto nv, int offset) DINAT_M2F_INLINE_LAMBDA {
    column_gather<Isa, T, K, decltype(nv)::value, R, S>(x, t, weights, vectors, vec_col, acc,
                                                        acc_col, offset);
  });
}

// The key-side gradients of query row x and, if given, the next row y (whose window starts
// rows_shift key rows lower) for tile t, once backward_tile has left p and ds in both rows'
// tile buffers: both rows in one pass where their K + 1 rows of sums fit the registers
// (K <= 11), else one row at a time. For windows with gathers<Isa>(kh).
template <typename Isa, typename T>
DINAT_M2F_INLINE void gather_key_grads(const Row<T>& x, const Row<T>* y, int rows_shift,
                                       const Tile<Isa, T>& t) {
  if constexpr (Isa::kRegisters >= 32) {
    auto run = [&](auto k) DINAT_M2F_INLINE_LAMBDA {
      constexpr int K = decltype(k)::value;
      // K + 1 key rows of two-vector sums, both rows' query vectors and a weight
      constexpr bool kBothRows = 2 * (K + 1) + 2 * 2 + 1 <= Isa::kRegisters;
      const Row<T>* pair[2] = {&x, y};
      if (kBothRows && y && rows_shift) {
        gather_product<Isa, T, K, 2, 1, false>(pair, t);
        gather_product<Isa, T, K, 2, 1, true>(pair, t);
      } else if (kBothRows && y) {
        gather_product<Isa, T, K, 2, 0, false>(pair, t);
        gather_product<Isa, T, K, 2, 0, true>(pair, t);
      } else {
        for (int r = 0; r < (y ? 2 : 1); ++r) {
          gather_product<Isa, T, K, 1, 0, false>(pair + r, t);
          gather_product<Isa, T, K, 1, 0, true>(pair + r, t);
        }
      }
    };
    switch (x.kh) {
      case 1:  // a 1-d problem
        run(std::integral_constant<int, 1>());
        break;
      case 3:
        run(std::integral_constant<int, 3>());
        break;
      case 5:
        run(std::integral_constant<int, 5>());
        break;
      case 7:
        run(std::integral_constant<int, 7>());
        break;
      case 9:
        run(std::integral_constant<int, 9>());
        break;
      case 11:
        run(std::integral_constant<int, 11>());
        break;
      case 13:
        run(std::integral_constant<int, 13>());
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The row kernels.

// Softmax numerators of a tile buffer (kh rows of kw + 2 columns, the outer two zero and
// left out), in place: scores[i][1 + j] becomes exp2(score - m); m is the per-lane maximum and
// sum the per-lane sum of the numerators. Four independent chains each for the maximum and
// the sum: one chain would wait a full add latency per score.
template <typename V, typename T>
DINAT_M2F_INLINE void softmax_exp2(T* scores, const int kh, const int kw, V& m, V& sum) {
  constexpr int L = sizeof(V) / sizeof(T);
  V mx[4], acc[4];
  for (int a = 0; a < 4; ++a) mx[a] = load<V>(scores + L), acc[a] = V{};
  for (int i = 0; i < kh; ++i) {
    const T* s = scores + (i * (kw + 2) + 1) * L;
    int j = 0;
    for (; j + 4 <= kw; j += 4)
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) mx[a] = vmax(mx[a], load<V>(s + (j + a) * L));
    for (; j < kw; ++j) mx[0] = vmax(mx[0], load<V>(s + j * L));
  }
  m = vmax(vmax(mx[0], mx[1]), vmax(mx[2], mx[3]));
  for (int i = 0; i < kh; ++i) {
    T* s = scores + (i * (kw + 2) + 1) * L;
    int j = 0;
    for (; j + 4 <= kw; j += 4) {
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) {
        const V p = exp2(load<V>(s + (j + a) * L) - m);
        store(s + (j + a) * L, p);
        acc[a] += p;
      }
    }
    for (; j < kw; ++j) {
      const V p = exp2(load<V>(s + j * L) - m);
      store(s + j * L, p);
      acc[0] += p;
    }
  }
  sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// The rest of a forward tile once its scores are in row.scores: softmax, weighted sum of values.
template <typename Isa, typename T>
DINAT_M2F_INLINE void forward_tile(const Row<T>& row, const Tile<Isa, T>& t, Ahead* ahead) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  const int w0 = t.w0;
  // softmax over the tile's k*k scores per lane (the zero columns take no part)
  V m, sum;
  softmax_exp2(row.scores, row.kh, row.kw, m, sum);
  T inv[L];
  store(inv, splat<V>(T(1)) / sum);
  const V lse = m + log2(sum);
  for (int l = 0; l < t.lanes; ++l) row.lse[(w0 + l) * row.lse_col] = lse[l];
  for_pairs<Isa>(row, t, [&](int l, int s, auto is_pair) DINAT_M2F_INLINE_LAMBDA {
    constexpr bool kPair = decltype(is_pair)::value;
    ahead->step();
    const int a = w0 + l;
    const PairWeights<T> w = pair_weights<Isa>(row, row.scores, l, s);
    T* out_a = row.out + a * row.out_col;
    for_dim_chunks<Isa, T>(row.v_dim, [&](auto nv, int offset) DINAT_M2F_INLINE_LAMBDA {
      pair_sum<Isa, T, decltype(nv)::value, kPair>(w, row.v, row.kh, row.ws[a], offset, inv[l],
                                                   kPair ? inv[l + 1] : T(0), out_a,
                                                   out_a + row.out_col, row.stream);
    });
  });
}

// out[q] = sum_n softmax_n(qt[q] . k_n + bias_n) v_n (in base 2), lse[q] = log2 sum exp2, for
// n (1 to max_rows) consecutive query rows, whose windows start `offset[r]` key rows below the
// first's (their scores share the key rows they have in common: tile_scores).
template <typename Isa, typename T>
DINAT_M2F_INLINE void forward_rows(const Row<T>* rows, int n, const int* offset) {
  constexpr int L = SimdOf<Isa, T>::kLanes;
  constexpr int kRows = max_rows<Isa>();
  ScoreSide<T> side[kRows];
  const ScoreSide<T>* sides[kRows];
  for (int r = 0; r < n; ++r) {
    side[r] = {rows[r].qt, rows[r].kt, rows[r].bias, rows[r].scores};
    sides[r] = &side[r];
  }
  const Row<T>& x = rows[0];
  Ahead ahead = ahead_of<Isa>(x, n, offset);
  for (int w0 = 0; w0 < x.cols; w0 += L) {
    const Tile<Isa, T> t = tile_at<Isa>(x, w0);
    tile_scores<Isa>(x, t, x.dim, sides, n, offset, &ahead);
    for (int r = 0; r < n; ++r) forward_tile<Isa>(rows[r], t, &ahead);
  }
}

// The rest of a backward tile once row.scores holds its scores and row.grads grad_out . v:
// the score gradients, grad_q (if wanted), and the row's contributions to grad_k, grad_v and
// grad_bias.
template <typename Isa, typename T>
DINAT_M2F_INLINE void backward_tile(const Row<T>& row, const Tile<Isa, T>& t, Ahead* ahead) {
  using V = typename SimdOf<Isa, T>::Vec;
  constexpr int L = SimdOf<Isa, T>::kLanes;
  const int w0 = t.w0;
  // p = exp2(s - lse), ds = p * (dp - delta)
  const V lse = load<V>(row.lse_in + w0);
  const V delta = load<V>(row.delta + w0);
  for (int i = 0; i < row.kh; ++i) {
    for (int j = 0; j < row.kw; ++j) {
      const int at = (i * (row.kw + 2) + 1 + j) * L;
      const V p = exp2(load<V>(row.scores + at) - lse);
      const V ds = p * (load<V>(row.grads + at) - delta);
      store(row.scores + at, p);
      store(row.grads + at, ds * row.scale);  // d/dq and d/dk of the logits carry the scale
      if (row.grad_bias) {
        T* gb = row.grad_bias + (i * row.kw + j) * row.q_stride + w0;
        store(gb, load<V>(gb) + ds);
      }
    }
  }
  // the key-side gradients: per key column where the registers allow (gather_key_grads, called
  // by backward_rows for both rows), else here per query pair
  const bool gathered = gathers<Isa>(row.kh);
  for_pairs<Isa>(row, t, [&](int l, int s, auto is_pair) DINAT_M2F_INLINE_LAMBDA {
    constexpr bool kPair = decltype(is_pair)::value;
    const int a = w0 + l;
    ahead->step();
    const PairWeights<T> p = pair_weights<Isa>(row, row.scores, l, s);
    const PairWeights<T> ds = pair_weights<Isa>(row, row.grads, l, s);
    if (row.grad_q) {
      T* out_a = row.grad_q + a * row.grad_q_col;
      for_dim_chunks<Isa, T>(row.k_dim, [&](auto nv, int offset) DINAT_M2F_INLINE_LAMBDA {
        pair_sum<Isa, T, decltype(nv)::value, kPair>(ds, row.k, row.kh, row.ws[a], offset, T(1),
                                                     T(1), out_a, out_a + row.grad_q_col,
                                                     row.stream);
      });
    }
    if (gathered) return;
    const T* g_a = row.g.ptr[0] + a * row.g.col;
    for_dim_chunks<Isa, T>(row.v_dim, [&](auto nv, int offset) DINAT_M2F_INLINE_LAMBDA {
      pair_scatter<Isa, T, decltype(nv)::value, kPair>(p, g_a, g_a + row.g.col, row.grad_v,
                                                       row.grad_v_col, row.kh, row.ws[a], offset);
    });
    const T* q_a = row.q.ptr[0] + a * row.q.col;
    for_dim_chunks<Isa, T>(row.k_dim, [&](auto nv, int offset) DINAT_M2F_INLINE_LAMBDA {
      pair_scatter<Isa, T, decltype(nv)::value, kPair>(ds, q_a, q_a + row.q.col, row.grad_k,
                                                       row.grad_k_col, row.kh, row.ws[a], offset);
    });
  });
}

// Gradients of n (1 to max_rows) consecutive query rows, as in forward_rows: the scores and
// grad_out . v of all of them at once, the key-side gradients gathered a pair of rows at a time.
template <typename Isa, typename T>
DINAT_M2F_INLINE void backward_rows(const Row<T>* rows, int n, const int* offset) {
  constexpr int L = SimdOf<Isa, T>::kLanes;
  constexpr int kRows = max_rows<Isa>();
  ScoreSide<T> side[kRows], grad_side[kRows];
  const ScoreSide<T>* scores[kRows];
  const ScoreSide<T>* grads[kRows];
  for (int r = 0; r < n; ++r) {
    const Row<T>& x = rows[r];
    side[r] = {x.qt, x.kt, x.bias, x.scores};
    grad_side[r] = {x.gt, x.vt, nullptr, x.grads};
    scores[r] = &side[r];
    grads[r] = &grad_side[r];
  }
  const Row<T>& x = rows[0];
  Ahead ahead = ahead_of<Isa>(x, n, offset);
  for (int w0 = 0; w0 < x.cols; w0 += L) {
    const Tile<Isa, T> t = tile_at<Isa>(x, w0);
    tile_scores<Isa>(x, t, x.dim, scores, n, offset, &ahead);
    tile_scores<Isa>(x, t, x.dim_v, grads, n, offset);
    for (int r = 0; r < n; ++r) backward_tile<Isa>(rows[r], t, &ahead);
    if (gathers<Isa>(x.kh))
      for (int r = 0; r < n; r += 2)
        gather_key_grads<Isa>(rows[r], r + 1 < n ? &rows[r + 1] : nullptr,
                              r + 1 < n ? offset[r + 1] - offset[r] : 0, t);
  }
}

}  // namespace cpu_tiles
}  // namespace na
}  // namespace dinat_m2f
