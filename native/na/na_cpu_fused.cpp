// Fused NA on the CPU: the ops dinat_m2f::na_fused (softmax(scale q.k + rpb) v, and the
// log2-sum-exp per query) and dinat_m2f::na_fused_backward (every gradient, recomputing the
// scores from the log-sum-exp instead of storing an attention map), registered for the CPU
// dispatch key. The semantics and the (out, lse) convention are those of the fused Triton ops
// (dinat_m2f/ops/na/fused.py); schemas in native/library.cpp.
//
// Work is split into tasks (batch, dilation group, block of rows, head), run in parallel with
// at::parallel_for. A task walks its query rows in order; the key rows of the current
// window are packed (float, group-contiguous, dim-major and/or token-major) into a ring of
// slots as they enter the window, so every key row is packed once per task. The register
// kernels of na_cpu_tiles.h then do a few consecutive query rows at a time (up to four in the
// AVX-512 forward, two elsewhere), which share their key loads, and, in a dilated problem or
// a large one's forward (prefetch_rows), prefetch the next rows' inputs as they go. Windows, bias
// indices and dilation groups come from na_index.h, like every other NA kernel's.
//
// Where every window is its whole dilation group (whole_windows), both passes instead pack
// each (batch, group, head) and run it as a small dense attention (na_cpu_dense.h).
//
// In the backward a task owns the query rows and the key rows of its block: it also visits
// the query rows just outside the block whose windows reach into it (recomputing their scores)
// so that the gradients of its key rows are complete, and writes only what it owns; no two
// tasks write the same element.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <immintrin.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "../common/cpu_isa.h"
#include "../common/cpu_simd.h"
#include "na_ops.h"
// Vectors pass only between always_inline functions: GCC's note that their ABI differs
// without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
// The register kernels are compiled three times below (AVX-512, AVX2 + FMA, and the baseline
// ISA); include every other header before them so that nothing else is compiled for AVX2.
#include "na_cpu_dense.h"
#include "na_cpu_tiles.h"

namespace dinat_m2f {
namespace na {
namespace {

using cpu_tiles::Row;
using cpu_tiles::Simd;

// ---------------------------------------------------------------------------------------------
// The row kernels per instruction set, chosen at run time.

template <typename C>
struct RowKernels {
  int lanes;  // queries per tile; the host pads its rows to a multiple
  int rows;   // the most consecutive query rows of one call (cpu_tiles::max_rows)
  // n <= rows consecutive query rows (see cpu_tiles::forward_rows and backward_rows)
  void (*forward)(const Row<C>* rows, int n, const int* offset);
  void (*backward)(const Row<C>* rows, int n, const int* offset);
  void (*transpose)(const C* src, int64_t col, int cols, int dim, C scale, C* dst, int stride);
};

__attribute__((target("avx2,fma"))) void forward_row_avx2(const Row<float>* rows, int n,
                                                          const int* offset) {
  cpu_tiles::forward_rows<cpu_tiles::Avx2>(rows, n, offset);
}
__attribute__((target("avx2,fma"))) void backward_row_avx2(const Row<float>* rows, int n,
                                                           const int* offset) {
  cpu_tiles::backward_rows<cpu_tiles::Avx2>(rows, n, offset);
}
__attribute__((target("avx2,fma"))) void transpose_row_avx2(const float* src, int64_t col, int cols,
                                                            int dim, float scale, float* dst,
                                                            int stride) {
  cpu_tiles::transpose_row(src, col, cols, dim, scale, dst, stride);
}
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void forward_row_avx512(const Row<float>* rows,
                                                                             int n,
                                                                             const int* offset) {
  cpu_tiles::forward_rows<cpu_tiles::Avx512>(rows, n, offset);
}
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void backward_row_avx512(
    const Row<float>* rows, int n, const int* offset) {
  cpu_tiles::backward_rows<cpu_tiles::Avx512>(rows, n, offset);
}
template <typename C>
void forward_row_baseline(const Row<C>* rows, int n, const int* offset) {
  cpu_tiles::forward_rows<cpu_tiles::Baseline>(rows, n, offset);
}
template <typename C>
void backward_row_baseline(const Row<C>* rows, int n, const int* offset) {
  cpu_tiles::backward_rows<cpu_tiles::Baseline>(rows, n, offset);
}
template <typename C>
void transpose_row_baseline(const C* src, int64_t col, int cols, int dim, C scale, C* dst,
                            int stride) {
  cpu_tiles::transpose_row(src, col, cols, dim, scale, dst, stride);
}

using cpu::cpu_isa;
using cpu::Isa;
using cpu::IsaChoice;

// The AVX-512 kernels tile 16 queries of a row; rows of at most 8 (a dilated group's often
// are) fit one AVX2 tile, where the wider one was 0.88-0.99x as fast (docs/benchmarks.md,
// step 16), so the AVX2 kernels take them unless AVX-512 is asked for by name.
constexpr int kAvx512Cols = 9;

template <typename C>
RowKernels<C> row_kernels(const Problem&) {
  return {Simd<C>::kLanes, cpu_tiles::max_rows<cpu_tiles::Baseline>(), &forward_row_baseline<C>,
          &backward_row_baseline<C>, &transpose_row_baseline<C>};
}

template <>
RowKernels<float> row_kernels<float>(const Problem& p) {
  const IsaChoice choice = cpu_isa();
  // the transpose stays 8 wide: it fills whole 8-column blocks, and the lanes of a 16-lane
  // tile past the row's end are never read back
  if (choice.isa == Isa::kAvx512 && (choice.asked || group_length(p.w, 0) >= kAvx512Cols))
    return {16, cpu_tiles::max_rows<cpu_tiles::Avx512>(), &forward_row_avx512, &backward_row_avx512,
            &transpose_row_avx2};
  if (choice.isa >= Isa::kAvx2)
    return {8, cpu_tiles::max_rows<cpu_tiles::Avx2>(), &forward_row_avx2, &backward_row_avx2,
            &transpose_row_avx2};
  return {8, cpu_tiles::max_rows<cpu_tiles::Baseline>(), &forward_row_baseline<float>,
          &backward_row_baseline<float>, &transpose_row_baseline<float>};
}

// The whole-window kernels (na_cpu_dense.h) per instruction set. Its score rows hold all of
// a group's keys (49 for kernel 7), so the widest vectors waste the least: AVX-512 wherever
// the machine has it.
struct GroupKernels {
  int lanes;  // the host pads token rows and score rows to a multiple
  void (*forward)(const cpu_dense::Group<float>& group);
  void (*backward)(const cpu_dense::Group<float>& group);
  void (*transpose)(const float* src, int64_t col, int cols, int dim, float scale, float* dst,
                    int stride);
};

__attribute__((target("avx512f,avx512vl,avx2,fma"))) void forward_group_avx512(
    const cpu_dense::Group<float>& group) {
  cpu_dense::forward_group<cpu_tiles::Avx512>(group);
}
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void backward_group_avx512(
    const cpu_dense::Group<float>& group) {
  cpu_dense::backward_group<cpu_tiles::Avx512>(group);
}
__attribute__((target("avx2,fma"))) void forward_group_avx2(const cpu_dense::Group<float>& group) {
  cpu_dense::forward_group<cpu_tiles::Avx2>(group);
}
__attribute__((target("avx2,fma"))) void backward_group_avx2(const cpu_dense::Group<float>& group) {
  cpu_dense::backward_group<cpu_tiles::Avx2>(group);
}
void forward_group_baseline(const cpu_dense::Group<float>& group) {
  cpu_dense::forward_group<cpu_tiles::Baseline>(group);
}
void backward_group_baseline(const cpu_dense::Group<float>& group) {
  cpu_dense::backward_group<cpu_tiles::Baseline>(group);
}

GroupKernels group_kernels() {
  const Isa isa = cpu_isa().isa;
  if (isa == Isa::kAvx512)
    return {16, &forward_group_avx512, &backward_group_avx512, &transpose_row_avx2};
  if (isa == Isa::kAvx2) return {8, &forward_group_avx2, &backward_group_avx2, &transpose_row_avx2};
  return {8, &forward_group_baseline, &backward_group_baseline, &transpose_row_baseline<float>};
}

// ---------------------------------------------------------------------------------------------
// Geometry.

constexpr double kLog2e = 1.4426950408889634;

int round_up(int n, int m) {
  return (n + m - 1) / m * m;
}

// One axis of a dilation group, in group coordinates: window start and first bias index of
// each position (from window_of), padded to `padded` entries (window starts keep growing by
// one past the end, so that padded lanes never break a tile's contiguity).
struct GroupAxis {
  int group, dilation, length;
  std::vector<int> start, bias;

  GroupAxis(const Axis& a, int g, int padded) : group(g), dilation(a.dilation) {
    length = group_length(a, g);
    start.resize(std::max(padded, length));
    bias.resize(length);
    for (int p = 0; p < length; ++p) {
      const Window win = window_of(g + p * a.dilation, a);
      start[p] = (win.first - g) / a.dilation;
      bias[p] = win.bias_first;
    }
    for (int p = length; p < int(start.size()); ++p) start[p] = start[p - 1] + 1;
  }
  int index(int p) const { return group + p * dilation; }  // position on the full axis
};

// The tasks of a problem: (batch, group h, group w, block of query rows, head), in this
// order (batch slowest). Heads vary fastest because a thread runs consecutive tasks: the
// heads of a token lie side by side, so the next task reads the same pages, and the cache
// lines beside those, that the last one read. Where a dilated group's tokens lie a page
// apart, this made forward+backward 9-13% faster than with heads second slowest
// (docs/benchmarks.md, step 9).
struct Tasks {
  const Problem& p;
  int blocks;

  // per batch and head: the (group h, group w, block) triples
  int64_t per_head() const { return int64_t(p.h.dilation) * p.w.dilation * blocks; }
  int64_t count() const { return p.batch * p.heads * per_head(); }
  struct Task {
    int64_t batch;
    int head, gh, gw, block;
  };
  Task operator()(int64_t t) const {
    Task task;
    task.head = int(t % p.heads);
    t /= p.heads;
    task.block = int(t % blocks);
    t /= blocks;
    task.gw = int(t % p.w.dilation);
    t /= p.w.dilation;
    task.gh = int(t % p.h.dilation);
    task.batch = t / p.h.dilation;
    return task;
  }
  // The task of `head` and triple `rest` (0 .. per_head() - 1) of `batch`.
  int64_t index(int64_t batch, int head, int64_t rest) const {
    return (batch * per_head() + rest) * p.heads + head;
  }
  // Rows [first, last) of block `b` of a group with `rows` rows.
  std::pair<int, int> rows_of(int b, int rows) const {
    return {int(int64_t(rows) * b / blocks), int(int64_t(rows) * (b + 1) / blocks)};
  }
};

// Blocks of about `rows` query rows per group, so that large maps give tasks to many threads.
// The split depends on the problem only, never on the thread count: results are the same
// bit for bit with any number of threads.
int blocks_for(const Problem& p, int rows) {
  return std::max(1, group_length(p.h, p.h.dilation - 1) / rows);  // the shortest group
}

// Query rows per block: the forward only packs kh - 1 key rows twice at a block's edge; the
// backward also recomputes the scores of up to kh - 1 query rows beyond it, so its blocks are
// longer.
constexpr int kForwardBlockRows = 32, kBackwardBlockRows = 64;

// Outputs larger than this are written with non-temporal stores (out and grad_query in place
// by the row kernels, grad_key and grad_value by Sink::flush). The op writes each of their
// lines once, whole, and a plain store would first read the line from memory, a miss per line
// that costs the most where a row's tokens lie far apart (many heads, dilation): 1.02-1.35x
// on the backward, up to 1.16x on the forward (docs/benchmarks.md, step 18). Smaller outputs
// stay in the caches for the op that reads them next.
constexpr int64_t kStreamBytes = int64_t(1) << 20;

// Row buffers (and RPB tables, one slot): `slots` rows of at least `n` values each,
// zero-initialised (paddings stay zero), each starting on a cache line: malloc aligns to 16
// bytes only, and a vector load that straddles two lines costs two.
template <typename C>
struct Slots {
  static constexpr int kLine = 64 / sizeof(C);
  std::vector<C> data;
  C* base = nullptr;
  int size = 0;
  void init(int slots, int n) {
    size = round_up(n, kLine);
    data.assign(size_t(slots) * size + kLine, C(0));
    const auto misaligned = reinterpret_cast<uintptr_t>(data.data()) % 64;
    base = data.data() + (misaligned ? (64 - misaligned) / sizeof(C) : 0);
  }
  C* slot(int s) { return base + size_t(s) * size; }
};

// A (batch, height, width, heads, dim) tensor, read by its strides (any layout, broadcast
// included). The kernels read it one group row at a time, copied into compact buffers even
// when they could be read in place: a dilated group's or a many-headed map's tokens lie far
// apart, and their loads are much faster on a compact row (caches, TLB) than the copy costs.
// dot() reads in place, once per token.
template <typename S, typename C>
struct Source {
  const S* data;
  int64_t sb, sh, sw, shead, sd;
  int dim, padded;  // head dim, and rounded up to the vector width

  Source(const at::Tensor& x, int lanes)
      : data(x.const_data_ptr<S>()),
        sb(x.stride(0)),
        sh(x.stride(1)),
        sw(x.stride(2)),
        shead(x.stride(3)),
        sd(x.stride(4)),
        dim(int(x.size(4))),
        padded(round_up(int(x.size(4)), lanes)) {}
  const S* at(int64_t b, int h, int w, int head) const {
    return data + b * sb + h * sh + w * sw + head * shead;
  }
  bool float_rows() const { return std::is_same<S, C>::value && (sd == 1 || dim <= 1); }
  // The group row (b, h, ., head) token-major in `dst` (cols x padded; the padding stays 0).
  void tokens(int64_t b, int h, const GroupAxis& w, int head, C* dst) const {
    for (int c = 0; c < w.length; ++c) {
      const S* src = at(b, h, w.index(c), head);
      C* out = dst + int64_t(c) * padded;
      if (float_rows() && c + 16 < w.length) {  // as transpose_row does: 1.00-1.015x
        const char* next = reinterpret_cast<const char*>(at(b, h, w.index(c + 16), head));
        for (int64_t o = 0; o < int64_t(sizeof(S)) * dim; o += 64) __builtin_prefetch(next + o);
      }
      if (float_rows())
        std::memcpy(out, src, sizeof(C) * dim);
      else
        for (int d = 0; d < dim; ++d) out[d] = C(src[d * sd]);
    }
  }
  // Appends the cache lines of the group row (b, h, ., head) to `lines`.
  void lines_of(int64_t b, int h, const GroupAxis& w, int head,
                std::vector<const char*>& lines) const {
    const int64_t bytes = float_rows() ? int64_t(sizeof(S)) * dim : 1;
    for (int c = 0; c < w.length; ++c) {
      const char* src = reinterpret_cast<const char*>(at(b, h, w.index(c), head));
      for (int64_t o = 0; o < bytes; o += 64) lines.push_back(src + o);
    }
  }
  // sum_d x(b, h, w, head, d) * y(b, h, w, head, d), y shaped like x.
  C dot(int64_t b, int h, int w, int head, const Source& y) const {
    const S *xs = at(b, h, w, head), *ys = y.at(b, h, w, head);
    if (float_rows() && y.float_rows())
      return cpu::dot(reinterpret_cast<const C*>(xs), reinterpret_cast<const C*>(ys), dim);
    C sum = 0;
    for (int d = 0; d < dim; ++d) sum += C(xs[d * sd]) * C(ys[d * y.sd]);
    return sum;
  }
  // The group row both ways, read from the tensor once: token-major in `row` (as tokens())
  // and dim-major in `dst` (as dim_major()), transposed from the compact copy, which the
  // caches hold (1.00-1.07x on the backward: docs/benchmarks.md, step 20).
  void both_ways(int64_t b, int h, const GroupAxis& w, int head, C scale, C* row, C* dst,
                 int stride, const RowKernels<C>& kernels) const {
    tokens(b, h, w, head, row);
    kernels.transpose(row, padded, w.length, dim, scale, dst, stride);
  }
  // dst[d * stride + c] = scale * x(b, h, column c, head, d).
  void dim_major(int64_t b, int h, const GroupAxis& w, int head, C scale, C* dst, int stride,
                 const RowKernels<C>& kernels) const {
    if (float_rows()) {
      kernels.transpose(reinterpret_cast<const C*>(at(b, h, w.index(0), head)), sw * w.dilation,
                        w.length, dim, scale, dst, stride);
      return;
    }
    for (int c = 0; c < w.length; ++c) {
      const S* src = at(b, h, w.index(c), head);
      for (int d = 0; d < dim; ++d) dst[d * stride + c] = C(src[d * sd]) * scale;
    }
  }
};

// A contiguous (batch, height, width, heads, dim) output written one group row at a time:
// in place when it is float with whole vectors per head, else through a row buffer.
template <typename S, typename C>
struct Sink {
  S* data;
  int heads, dim, padded;
  const Problem& p;
  bool in_place;
  bool stream;  // write with non-temporal stores (see kStreamBytes)

  Sink(at::Tensor& x, const Problem& problem, bool allow_in_place, int lanes)
      : data(x.mutable_data_ptr<S>()),
        heads(int(x.size(3))),
        dim(int(x.size(4))),
        padded(round_up(int(x.size(4)), lanes)),
        p(problem) {
    in_place = allow_in_place && std::is_same<S, C>::value && dim % lanes == 0;
    // in place, the row kernels' vector stores need every row aligned to a vector
    const bool aligned = reinterpret_cast<uintptr_t>(data) % (sizeof(C) * lanes) == 0;
    stream = int64_t(x.nbytes()) > kStreamBytes && (!in_place || aligned);
  }
  S* at(int64_t b, int h, int w, int head) const {
    return data + (token_of(b, h, w, p) * heads + head) * dim;
  }
  int64_t col(const GroupAxis& w) const {
    return in_place ? int64_t(heads) * dim * w.dilation : padded;
  }
  C* row(int64_t b, int h, const GroupAxis& w, int head, C* buffer) const {
    return in_place ? reinterpret_cast<C*>(at(b, h, w.index(0), head)) : buffer;
  }
  // Copies a row buffer out (after row() handed out the buffer).
  void flush(int64_t b, int h, const GroupAxis& w, int head, const C* buffer) const {
    if (in_place) return;
    for (int c = 0; c < w.length; ++c) {
      S* dst = at(b, h, w.index(c), head);
      const C* src = buffer + int64_t(c) * padded;
      if constexpr (std::is_same<S, C>::value) {
        if constexpr (std::is_same<S, float>::value) {
          if (stream && dim % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
            for (int d = 0; d < dim; d += 4) _mm_stream_ps(dst + d, _mm_loadu_ps(src + d));
            continue;
          }
        }
        std::memcpy(dst, src, sizeof(S) * dim);  // an element loop here took 1% of a backward
      } else {
        for (int d = 0; d < dim; ++d) dst[d] = S(src[d]);
      }
    }
  }
};

// One of the RPB tables (BiasTables): `head`'s, for the columns of group w.
template <typename S, typename C>
void fill_table(const S* rpb, int head, const Problem& p, const GroupAxis& w, int q_stride, C* t) {
  const int rows = 2 * p.h.kernel - 1, cols = 2 * p.w.kernel - 1, kw = p.w.kernel;
  const S* r = rpb + int64_t(head) * rows * cols;
  for (int br = 0; br < rows; ++br)
    for (int j = 0; j < kw; ++j)
      for (int c = 0; c < w.length; ++c)
        t[(size_t(br) * kw + j) * q_stride + c] = C(r[br * cols + w.bias[c] + j]) * C(kLog2e);
}

// A problem's RPB tables, [bias row][j][col] = log2 e * rpb[head][bias row][bias col of column
// col's neighbor j], one per head and length of a group along w (groups of one length have the
// same windows, and the lengths differ by at most one): made once per call. Made per task
// instead, they cost 8-15% of a forward and ~10% of a backward where groups are a kernel wide
// (a task's work is a few microseconds): docs/benchmarks.md, step 20.
template <typename C>
struct BiasTables {
  Slots<C> tables;
  int lengths[2] = {-1, -1};

  template <typename S>
  BiasTables(const S* rpb, const Problem& p, int q_stride) {
    if (rpb == nullptr) return;
    int groups[2] = {0, 0}, count = 0;
    for (int g = 0; g < p.w.dilation && count < 2; ++g) {
      const int length = group_length(p.w, g);
      if (count == 0 || length != lengths[0]) lengths[count] = length, groups[count++] = g;
    }
    tables.init(p.heads * count, (2 * p.h.kernel - 1) * p.w.kernel * q_stride);
    at::parallel_for(0, int64_t(p.heads) * count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t x = begin; x < end; ++x) {
        const int head = int(x / count), which = int(x % count);
        fill_table(rpb, head, p, GroupAxis(p.w, groups[which], q_stride), q_stride,
                   tables.slot(int(x)));
      }
    });
  }
  // The table of `head` for group w, or null without RPB.
  const C* of(int head, const GroupAxis& w) const {
    if (lengths[0] < 0) return nullptr;
    const int count = lengths[1] < 0 ? 1 : 2;
    return tables.base + size_t(head * count + (w.length == lengths[0] ? 0 : 1)) * tables.size;
  }
};

// Whether the tasks prefetch their next rows. A dilated group's tokens lie kilobytes apart,
// where the core's own prefetchers do not follow (packing them took a quarter to two fifths
// of a kernel-7 forward: docs/benchmarks.md, step 14). An undilated row is one stream: the
// forward prefetches it only where each input is larger than kPrefetchBytes, so that its rows
// come from beyond the core's L2 (1.02-1.12x there, 0.95-0.98x on maps that the caches hold;
// step 18), and the backward, which measured 0.95-1.06x on the large maps, not at all.
constexpr int64_t kPrefetchBytes = int64_t(4) << 20;
bool prefetch_rows(const Problem& p, const at::Tensor& input, bool forward) {
  if (p.h.dilation > 1 || p.w.dilation > 1) return true;
  return forward && int64_t(input.nbytes()) > kPrefetchBytes;
}

// Appends to `lines` the cache lines of the `count` query rows from `next` (those before `stop`)
// of every query-side source, and of the key rows that enter their windows (not yet in the
// ring: `tags`) of every key-side source.
template <typename S, typename C>
void next_rows_lines(const Tasks::Task& task, const GroupAxis& gh, const GroupAxis& gw, int next,
                     int count, int stop, int kh, const std::vector<int>& tags,
                     std::initializer_list<const Source<S, C>*> query_side,
                     std::initializer_list<const Source<S, C>*> key_side,
                     std::vector<const char*>& lines) {
  const int slots = int(tags.size());
  for (int hq = next; hq < std::min(next + count, stop); ++hq) {
    for (const Source<S, C>* x : query_side)
      x->lines_of(task.batch, gh.index(hq), gw, task.head, lines);
    const int r = gh.start[hq] + kh - 1;  // windows move down by at most one row per row
    if (tags[r % slots] == r) continue;
    for (const Source<S, C>* x : key_side)
      x->lines_of(task.batch, gh.index(r), gw, task.head, lines);
  }
}

// Sizes of one problem's row buffers.
struct Layout {
  int q_stride, k_stride, max_cols, tile;

  Layout(const Problem& p, int L) {
    max_cols = group_length(p.w, 0);  // group 0 is the longest
    q_stride = round_up(max_cols, L);
    k_stride = q_stride + L;
    tile = p.h.kernel * (p.w.kernel + 2) * L;
  }
};

// The fields of Row common to the forward and the backward.
template <typename C>
Row<C> row_of(const Problem& p, const Layout& lay, const GroupAxis& gw, int dim_v) {
  Row<C> row{};
  row.cols = gw.length;
  row.kh = p.h.kernel;
  row.kw = p.w.kernel;
  row.dim = p.dim;
  row.dim_v = dim_v;
  row.q_stride = lay.q_stride;
  row.k_stride = lay.k_stride;
  row.ws = gw.start.data();
  return row;
}

// ---------------------------------------------------------------------------------------------
// Forward.

// Query rows go up to kernels.rows at a time (the row kernels share the key rows of their
// windows), so the ring of key rows holds kh + rows - 1 slots: key row r lives in slot
// r % slots.
template <typename S, typename C>
void forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
             const at::Tensor& rpb, double scale, at::Tensor& out, at::Tensor& lse,
             const Problem& p) {
  const RowKernels<C> kernels = row_kernels<C>(p);
  const Source<S, C> q(query, kernels.lanes), k(key, kernels.lanes), v(value, kernels.lanes);
  const Sink<S, C> o(out, p, true, kernels.lanes);
  C* lse_data = lse.mutable_data_ptr<C>();
  const Layout lay(p, kernels.lanes);
  const BiasTables<C> tables(data_or_null<S>(rpb), p, lay.q_stride);
  const Tasks tasks{p, blocks_for(p, kForwardBlockRows)};
  const int kh = p.h.kernel, kw = p.w.kernel, R = kernels.rows, slots = kh + R - 1;
  const bool prefetch = prefetch_rows(p, query, true);

  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
    Slots<C> kt, vp, qt, orow, scores;
    kt.init(slots, q.dim * lay.k_stride);
    vp.init(slots, lay.max_cols * v.padded);
    qt.init(R, q.dim * lay.q_stride);
    orow.init(R, o.in_place ? 0 : lay.max_cols * o.padded);
    scores.init(R, lay.tile);
    std::vector<const C*> kt_rows(R * kh), v_rows(R * kh);
    std::vector<int> tags(slots);
    std::vector<const char*> ahead;

    for (int64_t t = begin; t < end; ++t) {
      const Tasks::Task task = tasks(t);
      const GroupAxis gh(p.h, task.gh, 0), gw(p.w, task.gw, lay.q_stride);
      const C* table = tables.of(task.head, gw);
      std::fill(tags.begin(), tags.end(), -1);
      const std::pair<int, int> block = tasks.rows_of(task.block, gh.length);

      Row<C> rows[cpu_tiles::kMaxRows];
      for (int x = 0; x < R; ++x) {
        Row<C>& row = rows[x];
        row = row_of<C>(p, lay, gw, v.dim);
        row.v_dim = v.padded;
        row.qt = qt.slot(x);
        row.kt = kt_rows.data() + x * kh;
        row.v = {v_rows.data() + x * kh, v.padded};
        row.scores = scores.slot(x);
        row.out_col = o.col(gw);
        row.stream = o.in_place && o.stream;
        row.lse_col = int64_t(p.heads) * p.w.dilation;
      }
      for (int hq = block.first; hq < block.second; hq += R) {
        const int n = std::min(R, block.second - hq);
        int offset[cpu_tiles::kMaxRows];
        for (int x = 0; x < n; ++x) {
          Row<C>& row = rows[x];
          const int h = gh.index(hq + x);
          offset[x] = gh.start[hq + x] - gh.start[hq];
          for (int i = 0; i < kh; ++i) {
            const int r = gh.start[hq + x] + i, s = r % slots, hr = gh.index(r);
            if (tags[s] != r) {
              k.dim_major(task.batch, hr, gw, task.head, C(1), kt.slot(s), lay.k_stride, kernels);
              v.tokens(task.batch, hr, gw, task.head, vp.slot(s));
              tags[s] = r;
            }
            kt_rows[x * kh + i] = kt.slot(s);
            v_rows[x * kh + i] = vp.slot(s);
          }
          q.dim_major(task.batch, h, gw, task.head, C(scale * kLog2e), qt.slot(x), lay.q_stride,
                      kernels);
          row.bias = table ? table + size_t(gh.bias[hq + x]) * kw * lay.q_stride : nullptr;
          row.out = o.row(task.batch, h, gw, task.head, orow.slot(x));
          row.lse = lse_data + token_of(task.batch, h, gw.index(0), p) * p.heads + task.head;
        }
        ahead.clear();
        if (prefetch)
          next_rows_lines(task, gh, gw, hq + R, R, block.second, kh, tags, {&q}, {&k, &v}, ahead);
        rows[0].ahead = ahead.data();
        rows[0].ahead_count = int(ahead.size());
        kernels.forward(rows, n, offset);
        for (int x = 0; x < n; ++x)
          o.flush(task.batch, gh.index(hq + x), gw, task.head, orow.slot(x));
      }
    }
    _mm_sfence();  // the non-temporal stores are weakly ordered: done before the threads join
  });
}

// ---------------------------------------------------------------------------------------------
// Backward.

// delta[b][h][w][head] = rowsum(grad_out * out), the softmax backward's correction: one pass in
// memory order, reading both tensors once (torch's mul and sum wrote and read back a product
// as large as out: 8% of a 7 x 7, 16-head forward+backward at 2 threads).
template <typename S, typename C>
void row_dots(const at::Tensor& grad_out, const at::Tensor& out, const Problem& p, C* delta) {
  const Source<S, C> g(grad_out, 1), o(out, 1);  // dot() reads in place: no padding
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const TokenCoords pos = coords_of(t, p);
      for (int head = 0; head < p.heads; ++head)
        delta[t * p.heads + head] = g.dot(pos.batch, pos.h, pos.w, head, o);
    }
  };
  at::parallel_for(0, p.tokens(), std::max<int64_t>(1, 4096 / p.heads), run);
}

template <typename S, typename C>
void backward(const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
              const at::Tensor& value, const at::Tensor& rpb, const at::Tensor& lse,
              const at::Tensor& delta, double scale, at::Tensor& grad_query, at::Tensor& grad_key,
              at::Tensor& grad_value, at::Tensor& grad_rpb_parts, const Problem& p,
              const Tasks& tasks) {
  const RowKernels<C> kernels = row_kernels<C>(p);
  const int lanes = kernels.lanes;
  const Source<S, C> q(query, lanes), k(key, lanes), v(value, lanes), g(grad_out, lanes);
  // key gradients accumulate in compact slots (see Source), the query's are written once
  const Sink<S, C> dq(grad_query, p, true, lanes), dk(grad_key, p, false, lanes),
      dv(grad_value, p, false, lanes);
  const C* lse_data = lse.const_data_ptr<C>();
  const C* delta_data = delta.const_data_ptr<C>();
  const Layout lay(p, lanes);
  const BiasTables<C> tables(data_or_null<S>(rpb), p, lay.q_stride);
  // query rows go up to kernels.rows at a time, as in the forward
  const int kh = p.h.kernel, kw = p.w.kernel, R = kernels.rows, slots = kh + R - 1;
  const int bias_rows = 2 * kh - 1, bias_cols = 2 * kw - 1;
  C* parts = grad_rpb_parts.defined() ? grad_rpb_parts.mutable_data_ptr<C>() : nullptr;
  const bool prefetch = prefetch_rows(p, query, false);

  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
    Slots<C> kt, vt, kp, gk, gv, qt, gt, qp, gp, dq_row, lrow, drow, scores, grads;
    kt.init(slots, q.dim * lay.k_stride);
    vt.init(slots, v.dim * lay.k_stride);
    kp.init(slots, lay.max_cols * k.padded);
    gk.init(slots, lay.max_cols * dk.padded);
    gv.init(slots, lay.max_cols * dv.padded);
    qt.init(R, q.dim * lay.q_stride);
    gt.init(R, g.dim * lay.q_stride);
    qp.init(R, lay.max_cols * q.padded);
    gp.init(R, lay.max_cols * g.padded);
    dq_row.init(R, dq.in_place ? 0 : lay.max_cols * dq.padded);
    lrow.init(R, lay.q_stride);
    drow.init(R, lay.q_stride);
    scores.init(R, lay.tile);
    grads.init(R, lay.tile);
    Slots<C> table_grad;
    std::vector<const C*> kt_rows(R * kh), vt_rows(R * kh), k_rows(R * kh), q_rows(R), g_rows(R);
    std::vector<C*> gk_rows(R * kh), gv_rows(R * kh);
    std::vector<int> tags(slots);
    std::vector<const char*> ahead;

    for (int64_t t = begin; t < end; ++t) {
      const Tasks::Task task = tasks(t);
      const GroupAxis gh(p.h, task.gh, 0), gw(p.w, task.gw, lay.q_stride);
      const C* table = tables.of(task.head, gw);
      if (table) table_grad.init(1, tables.tables.size);
      std::fill(tags.begin(), tags.end(), -1);
      const std::pair<int, int> block = tasks.rows_of(task.block, gh.length);
      const int first = block.first, last = block.second;
      // the query rows whose windows reach rows [first, last)
      int q_lo = first, q_hi = last;
      while (q_lo > 0 && gh.start[q_lo - 1] + kh > first) --q_lo;
      while (q_hi < gh.length && gh.start[q_hi] < last) ++q_hi;

      // key row r's gradients accumulate in slot s and are written when it leaves the ring
      auto flush = [&](int s) {
        const int r = tags[s];
        if (r < first || r >= last) return;
        const int h = gh.index(r);
        dk.flush(task.batch, h, gw, task.head, gk.slot(s));
        dv.flush(task.batch, h, gw, task.head, gv.slot(s));
      };

      Row<C> rows[cpu_tiles::kMaxRows];
      for (int x = 0; x < R; ++x) {
        Row<C>& row = rows[x];
        row = row_of<C>(p, lay, gw, v.dim);
        row.k_dim = q.padded;
        row.v_dim = v.padded;
        row.scale = C(scale);
        row.qt = qt.slot(x);
        row.kt = kt_rows.data() + x * kh;
        row.scores = scores.slot(x);
        row.lse_in = lrow.slot(x);
        row.delta = drow.slot(x);
        row.gt = gt.slot(x);
        row.vt = vt_rows.data() + x * kh;
        row.k = {k_rows.data() + x * kh, k.padded};
        row.q = {q_rows.data() + x, q.padded};
        row.g = {g_rows.data() + x, g.padded};
        row.grads = grads.slot(x);
        row.grad_q_col = dq.col(gw);
        row.stream = dq.in_place && dq.stream;
        row.grad_k = gk_rows.data() + x * kh;
        row.grad_k_col = dk.padded;
        row.grad_v = gv_rows.data() + x * kh;
        row.grad_v_col = dv.padded;
      }
      for (int hq = q_lo; hq < q_hi; hq += R) {
        const int n = std::min(R, q_hi - hq);
        int offset[cpu_tiles::kMaxRows];
        for (int x = 0; x < n; ++x) {
          Row<C>& row = rows[x];
          const int h = gh.index(hq + x);
          offset[x] = gh.start[hq + x] - gh.start[hq];
          for (int i = 0; i < kh; ++i) {
            const int r = gh.start[hq + x] + i, s = r % slots, hr = gh.index(r);
            const bool owned = r >= first && r < last;
            if (tags[s] != r) {
              if (tags[s] >= 0) flush(s);
              k.both_ways(task.batch, hr, gw, task.head, C(1), kp.slot(s), kt.slot(s), lay.k_stride,
                          kernels);
              v.dim_major(task.batch, hr, gw, task.head, C(1), vt.slot(s), lay.k_stride, kernels);
              if (owned) {
                std::fill_n(gk.slot(s), gk.size, C(0));
                std::fill_n(gv.slot(s), gv.size, C(0));
              }
              tags[s] = r;
            }
            kt_rows[x * kh + i] = kt.slot(s);
            vt_rows[x * kh + i] = vt.slot(s);
            k_rows[x * kh + i] = kp.slot(s);
            gk_rows[x * kh + i] = owned ? gk.slot(s) : nullptr;
            gv_rows[x * kh + i] = owned ? gv.slot(s) : nullptr;
          }
          const bool own_query = hq + x >= first && hq + x < last;
          q.both_ways(task.batch, h, gw, task.head, C(scale * kLog2e), qp.slot(x), qt.slot(x),
                      lay.q_stride, kernels);
          g.both_ways(task.batch, h, gw, task.head, C(1), gp.slot(x), gt.slot(x), lay.q_stride,
                      kernels);
          q_rows[x] = qp.slot(x);
          g_rows[x] = gp.slot(x);
          const int64_t first_token = token_of(task.batch, h, gw.index(0), p) * p.heads + task.head;
          const int64_t lse_col = int64_t(p.heads) * p.w.dilation;
          for (int c = 0; c < gw.length; ++c) {
            lrow.slot(x)[c] = lse_data[first_token + c * lse_col];
            drow.slot(x)[c] = delta_data[first_token + c * lse_col];
          }
          const size_t bias_at = size_t(gh.bias[hq + x]) * kw * lay.q_stride;
          row.bias = table ? table + bias_at : nullptr;
          row.grad_bias = table && own_query ? table_grad.slot(0) + bias_at : nullptr;
          row.grad_q = own_query ? dq.row(task.batch, h, gw, task.head, dq_row.slot(x)) : nullptr;
        }
        ahead.clear();
        if (prefetch)
          next_rows_lines(task, gh, gw, hq + R, R, q_hi, kh, tags, {&q, &g}, {&k, &v}, ahead);
        rows[0].ahead = ahead.data();
        rows[0].ahead_count = int(ahead.size());
        kernels.backward(rows, n, offset);
        for (int x = 0; x < n; ++x)
          if (rows[x].grad_q) dq.flush(task.batch, gh.index(hq + x), gw, task.head, dq_row.slot(x));
      }
      for (int s = 0; s < slots; ++s)
        if (tags[s] >= 0) flush(s);
      if (parts) {  // this task's share of grad_rpb
        C* part = parts + t * bias_rows * bias_cols;
        std::fill(part, part + bias_rows * bias_cols, C(0));
        for (int br = 0; br < bias_rows; ++br)
          for (int j = 0; j < kw; ++j)
            for (int c = 0; c < gw.length; ++c)
              part[br * bias_cols + gw.bias[c] + j] +=
                  table_grad.slot(0)[(size_t(br) * kw + j) * lay.q_stride + c];
      }
    }
    _mm_sfence();  // as in the forward
  });
}

// ---------------------------------------------------------------------------------------------
// Whole-window groups (na_cpu_dense.h): one task per (batch, group, head) packs the group's
// n = kh * kw tokens and runs them as one small dense attention, forward or backward.

// Groups up to this many tokens (kernel 16 x 16) take the dense kernels: their score rows
// (n x n) stay in the core's L2.
constexpr int kMaxGroupTokens = 256;

// Whether every window of the problem is its whole dilation group: every group is exactly a
// kernel long on both axes (window_start is then 0 for every query).
bool whole_windows(const Problem& p) {
  return p.h.length == p.h.kernel * p.h.dilation && p.w.length == p.w.kernel * p.w.dilation &&
         p.h.kernel * p.w.kernel <= kMaxGroupTokens;
}

// The RPB in the order of the score rows, made once per call. Per head, one table per query
// column qj: table[qj][r][kj] = log2 e * rpb[head][r][gw.bias[qj] + kj] (2 kh - 1 rows of kw).
// The biases of query (qi, qj) at the keys (ki, kj), in key order ki * kw + kj, are then the n
// consecutive values from table[qj][gh.bias[qi]] (offset `at`): a few hundred values per head
// where a row per query would take n x n. The mask keeps the padding out of each row's
// maximum, the keep factor out of its sum.
struct GroupBias {
  Slots<float> tables;
  std::vector<int> at;      // per query token
  std::vector<float> mask;  // per key column: 0, and -inf for the padding
  std::vector<float> keep;  // per key column: 1, and 0 for the padding
  int per_column = 0;       // values per query column's table

  template <typename S>
  GroupBias(const S* rpb, const Problem& p, int n_pad) {
    const int kh = p.h.kernel, kw = p.w.kernel, n = kh * kw, cols = 2 * kw - 1;
    mask.assign(n_pad, -std::numeric_limits<float>::infinity());
    std::fill_n(mask.begin(), n, 0.f);
    keep.assign(n_pad, 0.f);
    std::fill_n(keep.begin(), n, 1.f);
    if (rpb == nullptr) return;
    const GroupAxis gh(p.h, 0, 0), gw(p.w, 0, 0);  // every group has these windows
    per_column = (2 * kh - 1) * kw;
    at.resize(n);
    for (int t = 0; t < n; ++t) at[t] = t % kw * per_column + gh.bias[t / kw] * kw;
    // a query's last values read past its table: the padding, masked, and zeros at the end
    tables.init(p.heads, kw * per_column + n_pad);
    for (int head = 0; head < p.heads; ++head)
      for (int qj = 0; qj < kw; ++qj)
        for (int r = 0; r < 2 * kh - 1; ++r) {
          const S* src = rpb + (int64_t(head) * (2 * kh - 1) + r) * cols + gw.bias[qj];
          float* dst = tables.slot(head) + qj * per_column + r * kw;
          for (int kj = 0; kj < kw; ++kj) dst[kj] = float(src[kj]) * float(kLog2e);
        }
  }
  const float* of(int head) const {
    return at.empty() ? nullptr : tables.base + size_t(head) * tables.size;
  }
};

// A group's packed inputs and work rows: one set per thread.
struct GroupBuffers {
  Slots<float> q, k, kt, v, vt, g, scores, grads, grad_bias, bias_sums, out, grad_q, grad_k, grad_v,
      lse, maxima, inv, delta;

  GroupBuffers(const Problem& p, int n_pad, int q_pad, int v_pad, int dim_v, bool backward) {
    const int n = p.h.kernel * p.w.kernel;
    q.init(1, n * q_pad);
    k.init(1, n * q_pad);
    kt.init(1, p.dim * n_pad);
    v.init(1, n * v_pad);
    scores.init(1, n * n_pad);
    lse.init(1, n_pad);
    if (!backward) {
      out.init(1, n * v_pad);
      maxima.init(1, n_pad);
      inv.init(1, n_pad);
      return;
    }
    vt.init(1, dim_v * n_pad);
    g.init(1, n * v_pad);
    grads.init(1, n * n_pad);
    grad_bias.init(1, n * n_pad);
    bias_sums.init(1, p.w.kernel * (2 * p.h.kernel - 1) * p.w.kernel + n_pad);
    grad_q.init(1, n * q_pad);
    grad_k.init(1, n * q_pad);
    grad_v.init(1, n * v_pad);
    delta.init(1, n);
  }
  // The group's tokens of `x`, token-major, group row after group row.
  template <typename S>
  static void pack(const Source<S, float>& x, int64_t b, const GroupAxis& gh, const GroupAxis& gw,
                   int head, float* dst) {
    for (int i = 0; i < gh.length; ++i)
      x.tokens(b, gh.index(i), gw, head, dst + int64_t(i) * gw.length * x.padded);
  }
  // A task's inputs: its group's tokens of q, k and v (and of grad_out, given one: the
  // backward), and the keys (and the values, for the backward) dim-major.
  template <typename S>
  void pack_inputs(const Tasks::Task& task, const GroupAxis& gh, const GroupAxis& gw,
                   const GroupKernels& kernels, int n_pad, const Source<S, float>& query,
                   const Source<S, float>& key, const Source<S, float>& value,
                   const Source<S, float>* grad_out) {
    const int n = gh.length * gw.length;
    pack(query, task.batch, gh, gw, task.head, q.base);
    pack(key, task.batch, gh, gw, task.head, k.base);
    pack(value, task.batch, gh, gw, task.head, v.base);
    kernels.transpose(k.base, key.padded, n, key.dim, 1.f, kt.base, n_pad);
    if (grad_out == nullptr) return;
    pack(*grad_out, task.batch, gh, gw, task.head, g.base);
    kernels.transpose(v.base, value.padded, n, value.dim, 1.f, vt.base, n_pad);
  }
  // Writes a token-major group buffer out, group row after group row.
  template <typename S>
  static void unpack(const Sink<S, float>& x, int64_t b, const GroupAxis& gh, const GroupAxis& gw,
                     int head, const float* src) {
    for (int i = 0; i < gh.length; ++i)
      x.flush(b, gh.index(i), gw, head, src + int64_t(i) * gw.length * x.padded);
  }
};

// The axes of a task's dilation group, made again only when the group changes: the tasks of
// a thread run the heads of one group in turn, and each GroupAxis allocates.
struct GroupAxes {
  const Problem& p;
  int gh = -1, gw = -1;
  GroupAxis h, w;
  explicit GroupAxes(const Problem& problem) : p(problem), h(problem.h, 0, 0), w(problem.w, 0, 0) {}
  GroupAxes& of(const Tasks::Task& task) {
    if (task.gh != gh) h = GroupAxis(p.h, gh = task.gh, 0);
    if (task.gw != gw) w = GroupAxis(p.w, gw = task.gw, 0);
    return *this;
  }
};

// The group's fields that do not change from task to task.
cpu_dense::Group<float> group_of(const Problem& p, int n_pad, int q_pad, int v_pad, int dim_v,
                                 double scale, const GroupBias& bias, GroupBuffers& buf) {
  cpu_dense::Group<float> x{};
  x.n = p.h.kernel * p.w.kernel;
  x.n_pad = n_pad;
  x.dim = p.dim;
  x.dim_v = dim_v;
  x.q_pad = q_pad;
  x.v_pad = v_pad;
  x.logit_scale = float(scale * kLog2e);
  x.scale = float(scale);
  x.bias_at = bias.at.data();
  x.mask = bias.mask.data();
  x.keep = bias.keep.data();
  x.q = buf.q.base;
  x.k = buf.k.base;
  x.kt = buf.kt.base;
  x.v = buf.v.base;
  x.vt = buf.vt.base;
  x.g = buf.g.base;
  x.scores = buf.scores.base;
  x.grads = buf.grads.base;
  x.out = buf.out.base;
  x.lse = buf.lse.base;
  x.maxima = buf.maxima.base;
  x.inv = buf.inv.base;
  x.grad_q = buf.grad_q.base;
  x.lse_in = buf.lse.base;
  x.delta = buf.delta.base;
  x.grad_k = buf.grad_k.base;
  x.grad_v = buf.grad_v.base;
  return x;
}

template <typename S>
void forward_whole(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                   const at::Tensor& rpb, double scale, at::Tensor& out, at::Tensor& lse,
                   const Problem& p) {
  const GroupKernels kernels = group_kernels();
  const int L = kernels.lanes, kw = p.w.kernel, n = p.h.kernel * kw, n_pad = round_up(n, L);
  const Source<S, float> q(query, L), k(key, L), v(value, L);
  const Sink<S, float> o(out, p, false, L);
  float* lse_data = lse.mutable_data_ptr<float>();
  const GroupBias bias(data_or_null<S>(rpb), p, n_pad);
  const Tasks tasks{p, 1};

  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
    GroupBuffers buf(p, n_pad, q.padded, v.padded, v.dim, false);
    cpu_dense::Group<float> x = group_of(p, n_pad, q.padded, v.padded, v.dim, scale, bias, buf);
    GroupAxes axes(p);
    for (int64_t t = begin; t < end; ++t) {
      const Tasks::Task task = tasks(t);
      const GroupAxis &gh = axes.of(task).h, &gw = axes.w;
      buf.pack_inputs(task, gh, gw, kernels, n_pad, q, k, v, static_cast<decltype(&q)>(nullptr));
      x.bias = bias.of(task.head);
      kernels.forward(x);
      GroupBuffers::unpack(o, task.batch, gh, gw, task.head, buf.out.base);
      for (int i = 0, t2 = 0; i < gh.length; ++i)
        for (int j = 0; j < kw; ++j, ++t2)
          lse_data[token_of(task.batch, gh.index(i), gw.index(j), p) * p.heads + task.head] =
              buf.lse.base[t2];
    }
    _mm_sfence();  // Sink::flush's non-temporal stores, as in forward()
  });
}

template <typename S>
void backward_whole(const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
                    const at::Tensor& value, const at::Tensor& rpb, const at::Tensor& lse,
                    const at::Tensor& delta, double scale, at::Tensor& grad_query,
                    at::Tensor& grad_key, at::Tensor& grad_value, at::Tensor& grad_rpb_parts,
                    const Problem& p, const Tasks& tasks) {
  const GroupKernels kernels = group_kernels();
  const int L = kernels.lanes, kw = p.w.kernel, n = p.h.kernel * kw, n_pad = round_up(n, L);
  const Source<S, float> q(query, L), k(key, L), v(value, L), g(grad_out, L);
  const Sink<S, float> dq(grad_query, p, false, L), dk(grad_key, p, false, L),
      dv(grad_value, p, false, L);
  const float* lse_data = lse.const_data_ptr<float>();
  const float* delta_data = delta.const_data_ptr<float>();
  const GroupBias bias(data_or_null<S>(rpb), p, n_pad);
  const int bias_cols = 2 * kw - 1, part_size = (2 * p.h.kernel - 1) * bias_cols;
  float* parts = grad_rpb_parts.defined() ? grad_rpb_parts.mutable_data_ptr<float>() : nullptr;

  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
    GroupBuffers buf(p, n_pad, q.padded, v.padded, v.dim, true);
    cpu_dense::Group<float> x = group_of(p, n_pad, q.padded, v.padded, v.dim, scale, bias, buf);
    x.grad_bias = parts ? buf.grad_bias.base : nullptr;
    GroupAxes axes(p);
    for (int64_t t = begin; t < end; ++t) {
      const Tasks::Task task = tasks(t);
      const GroupAxis &gh = axes.of(task).h, &gw = axes.w;
      buf.pack_inputs(task, gh, gw, kernels, n_pad, q, k, v, &g);
      for (int i = 0, t2 = 0; i < gh.length; ++i)
        for (int j = 0; j < kw; ++j, ++t2) {
          const int64_t at = token_of(task.batch, gh.index(i), gw.index(j), p) * p.heads;
          buf.lse.base[t2] = lse_data[at + task.head];
          buf.delta.base[t2] = delta_data[at + task.head];
        }
      x.bias = bias.of(task.head);
      kernels.backward(x);
      GroupBuffers::unpack(dq, task.batch, gh, gw, task.head, buf.grad_q.base);
      GroupBuffers::unpack(dk, task.batch, gh, gw, task.head, buf.grad_k.base);
      GroupBuffers::unpack(dv, task.batch, gh, gw, task.head, buf.grad_v.base);
      if (parts) {  // this task's share of grad_rpb: each score's gradient at its bias
        // first in the tables' order (GroupBias), where a query's n gradients are consecutive
        float* sums = buf.bias_sums.base;
        std::fill_n(sums, buf.bias_sums.size, 0.f);
        for (int t2 = 0; t2 < n; ++t2) {
          const float* ds = buf.grad_bias.base + int64_t(t2) * n_pad;
          float* dst = sums + bias.at[t2];
          for (int key = 0; key < n; ++key) dst[key] += ds[key];
        }
        float* part = parts + t * part_size;
        std::fill(part, part + part_size, 0.f);
        for (int qj = 0; qj < kw; ++qj)
          for (int r = 0; r < 2 * p.h.kernel - 1; ++r) {
            const float* src = sums + qj * bias.per_column + r * kw;
            float* dst = part + r * bias_cols + gw.bias[qj];
            for (int kj = 0; kj < kw; ++kj) dst[kj] += src[kj];
          }
      }
    }
    _mm_sfence();  // as in forward()
  });
}

// ---------------------------------------------------------------------------------------------
// The ops.

struct Checked {
  Problem p;
  int64_t rank;
  int dim_v;
  at::Tensor rpb;
};

Checked check_inputs(const char* op, const at::Tensor& query, const at::Tensor& key,
                     const at::Tensor& value, const c10::optional<at::Tensor>& rpb,
                     at::IntArrayRef kernel_size, at::IntArrayRef dilation, double scale) {
  Checked c;
  c.p = make_problem(op, "query", query, kernel_size, dilation);
  c.rank = int64_t(kernel_size.size());
  check_pair(op, "query", query, "key", key);
  TORCH_CHECK_VALUE(value.dim() == query.dim() && value.sizes().slice(0, value.dim() - 1) ==
                                                      query.sizes().slice(0, query.dim() - 1),
                    op, ": value must have query's shape but for the head dim, got query ",
                    shape_str(query.sizes()), " and value ", shape_str(value.sizes()));
  TORCH_CHECK_VALUE(value.device() == query.device() && value.scalar_type() == query.scalar_type(),
                    op, ": value must match query's device and dtype (", query.device(), ", ",
                    query.scalar_type(), "), got ", value.device(), ", ", value.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  c.dim_v = int(value.size(-1));
  c.rpb = checked_rpb(op, rpb, c.p, query);
  return c;
}

// (batch, *spatial, heads, dim) -> a (batch, height, width, heads, dim) view (no copy).
at::Tensor view_2d(const at::Tensor& x, int64_t rank) {
  return rank == 1 ? x.unsqueeze(1) : x;
}

at::ScalarType lse_type(const at::Tensor& like) {
  return like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// An output of the op, not yet written. glibc serves an allocation of 32 MiB or more (its
// largest mmap threshold) from a fresh mapping unless its heap has that much free, and each
// 4 KiB page then faults on its first write: 13% of a forward on a 256 x 256 map with 6 heads
// (50 MB outputs). Asked for 2 MiB pages first (transparent huge pages, where the kernel
// allows them), such maps ran forward 1.10-1.14x and backward 1.16-1.21x as fast
// (docs/benchmarks.md, step 22). Pages already in place (a reused heap region) stay as they
// are; the hint covers only whole 2 MiB pages inside the tensor, so no memory is added.
constexpr int64_t kHugePageBytes = int64_t(32) << 20;
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (out.nbytes() >= size_t(kHugePageBytes)) {
    constexpr uintptr_t kPage = uintptr_t(2) << 20;
    const auto start = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t first = (start + kPage - 1) & ~(kPage - 1),
                    last = (start + out.nbytes()) & ~(kPage - 1);
    // a refusal (no THP) leaves 4 KiB pages
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return out;
}

std::tuple<at::Tensor, at::Tensor> na_fused_cpu(const at::Tensor& query, const at::Tensor& key,
                                                const at::Tensor& value,
                                                const c10::optional<at::Tensor>& rpb,
                                                at::IntArrayRef kernel_size,
                                                at::IntArrayRef dilation, double scale) {
  const Checked c = check_inputs("na_fused", query, key, value, rpb, kernel_size, dilation, scale);
  at::Tensor out = new_output(value.sizes(), value.options());
  std::vector<int64_t> lse_shape(query.sizes().begin(), query.sizes().end() - 1);
  at::Tensor lse = at::empty(lse_shape, query.options().dtype(lse_type(query)));
  if (out.numel() > 0) {
    at::Tensor out2 = view_2d(out, c.rank),
               lse2 = lse.view({c.p.batch, c.p.h.length, c.p.w.length, c.p.heads});
    DINAT_M2F_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na_fused_cpu", [&] {
      if constexpr (std::is_same<at::opmath_type<scalar_t>, float>::value) {
        if (whole_windows(c.p)) {
          forward_whole<scalar_t>(view_2d(query, c.rank), view_2d(key, c.rank),
                                  view_2d(value, c.rank), c.rpb, scale, out2, lse2, c.p);
          return;
        }
      }
      forward<scalar_t, at::opmath_type<scalar_t>>(view_2d(query, c.rank), view_2d(key, c.rank),
                                                   view_2d(value, c.rank), c.rpb, scale, out2, lse2,
                                                   c.p);
    });
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> na_fused_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const c10::optional<at::Tensor>& rpb, const at::Tensor& out,
    const at::Tensor& lse, at::IntArrayRef kernel_size, at::IntArrayRef dilation, double scale) {
  const char* op = "na_fused_backward";
  const Checked c = check_inputs(op, query, key, value, rpb, kernel_size, dilation, scale);
  check_pair(op, "grad_out", grad_out, "value", value);
  check_pair(op, "out", out, "value", value);
  std::vector<int64_t> lse_shape(query.sizes().begin(), query.sizes().end() - 1);
  TORCH_CHECK_VALUE(lse.sizes() == at::IntArrayRef(lse_shape) &&
                        lse.scalar_type() == lse_type(query) && lse.device() == query.device(),
                    op, ": lse must be na_fused's (shape ", shape_str(lse_shape), ", dtype ",
                    lse_type(query), "), got shape ", shape_str(lse.sizes()), ", dtype ",
                    lse.scalar_type());
  at::Tensor grad_query = new_output(query.sizes(), query.options());
  at::Tensor grad_key = new_output(key.sizes(), key.options());
  at::Tensor grad_value = new_output(value.sizes(), value.options());
  const Problem& p = c.p;
  const int bias_rows = 2 * p.h.kernel - 1, bias_cols = 2 * p.w.kernel - 1;
  at::Tensor grad_rpb = c.rpb.defined()
                            ? at::zeros({p.heads, bias_rows, bias_cols}, query.options())
                            : at::empty({0}, query.options());
  if (p.tokens() > 0 && p.heads > 0) {
    const std::vector<int64_t> rows = {p.batch, p.h.length, p.w.length, p.heads};
    at::Tensor lse2 = lse.contiguous().view(rows);
    at::Tensor delta = at::empty(rows, lse.options());
    at::Tensor gq = view_2d(grad_query, c.rank), gk = view_2d(grad_key, c.rank),
               gv = view_2d(grad_value, c.rank);
    DINAT_M2F_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na_fused_backward_cpu", [&] {
      using C = at::opmath_type<scalar_t>;
      row_dots<scalar_t, C>(view_2d(grad_out, c.rank), view_2d(out, c.rank), p,
                            delta.mutable_data_ptr<C>());
      // whole-window groups: one task per group, which holds all of its rows
      const bool whole = std::is_same<C, float>::value && whole_windows(p);
      const Tasks tasks{p, whole ? 1 : blocks_for(p, kBackwardBlockRows)};
      at::Tensor parts;
      if (c.rpb.defined()) parts = at::empty({tasks.count(), bias_rows * bias_cols}, lse.options());
      if constexpr (std::is_same<C, float>::value) {
        if (whole)
          backward_whole<scalar_t>(view_2d(grad_out, c.rank), view_2d(query, c.rank),
                                   view_2d(key, c.rank), view_2d(value, c.rank), c.rpb, lse2, delta,
                                   scale, gq, gk, gv, parts, p, tasks);
      }
      if (!whole)
        backward<scalar_t, C>(view_2d(grad_out, c.rank), view_2d(query, c.rank),
                              view_2d(key, c.rank), view_2d(value, c.rank), c.rpb, lse2, delta,
                              scale, gq, gk, gv, parts, p, tasks);
      if (parts.defined()) {
        // each head's tasks (batch-major order), summed in a fixed order
        const int64_t per_head = tasks.per_head(), size = bias_rows * bias_cols;
        const C* part = parts.const_data_ptr<C>();
        std::vector<C> sum(size);
        scalar_t* dst = grad_rpb.mutable_data_ptr<scalar_t>();
        for (int head = 0; head < p.heads; ++head) {
          std::fill(sum.begin(), sum.end(), C(0));
          for (int64_t b = 0; b < p.batch; ++b)
            for (int64_t rest = 0; rest < per_head; ++rest) {
              const C* x = part + tasks.index(b, head, rest) * size;
              for (int i = 0; i < size; ++i) sum[i] += x[i];
            }
          for (int i = 0; i < size; ++i) dst[head * size + i] = scalar_t(sum[i]);
        }
      }
    });
  }
  if (c.rpb.defined()) grad_rpb = grad_rpb.view(rpb_shape(p, c.rank));
  return {grad_query, grad_key, grad_value, grad_rpb};
}

}  // namespace

TORCH_LIBRARY_IMPL(dinat_m2f, CPU, m) {
  m.impl("na_fused", &na_fused_cpu);
  m.impl("na_fused_backward", &na_fused_backward_cpu);
}

}  // namespace na
}  // namespace dinat_m2f
