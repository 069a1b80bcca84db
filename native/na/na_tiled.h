// Block programs of the shared-memory tiled 2D QK and AV kernels.
//
// A block owns a tile of up to `tile` x `tile` queries of one dilation group of one
// (batch, head). Window starts never decrease and grow by at most one per in-group step, so
// every key the tile needs lies in a box of at most (tile + kernel - 1)^2 in-group positions:
// the box is staged once in shared memory (head dim in chunks, to fit) and read by all the
// tile's queries, instead of each query reading its k*k keys from global memory.
//
// The programs are written as phases of strided loops over the block's threads separated by
// __syncthreads(), with no per-thread state carried across a barrier. They are device code
// of the SIMT layer (common/simt.h): the same code runs on the GPU and on the emulated device.
// The plan (tile, head-dim chunk, shared memory) is host code shared by both builds.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "../common/simt.h"
#include "na_index.h"

namespace dinat_m2f {
namespace na {
namespace tiled {

// Tiles along an axis: the longest dilation group has ceil(L / d) tokens.
DINAT_M2F_HOST_DEVICE int tiles_along(const Axis& a, int tile) {
  const int longest_group = (a.length + a.dilation - 1) / a.dilation;
  return (longest_group + tile - 1) / tile;
}

DINAT_M2F_HOST_DEVICE int64_t num_blocks(const Problem& p, int tile) {
  return p.batch * p.heads * p.h.dilation * p.w.dilation * tiles_along(p.h, tile) *
         tiles_along(p.w, tile);
}

// Shared-memory row stride of a staged chunk, padded by one to spread banks.
DINAT_M2F_HOST_DEVICE int padded(int chunk) {
  return chunk + 1;
}

// Elements of shared memory each program needs.
DINAT_M2F_HOST_DEVICE int64_t key_box_elems(const Problem& p, int tile, int chunk) {
  return int64_t(tile + p.h.kernel - 1) * (tile + p.w.kernel - 1) * padded(chunk);
}
DINAT_M2F_HOST_DEVICE int64_t qk_smem_elems(const Problem& p, int tile, int chunk) {
  const int64_t queries = int64_t(tile) * tile;
  return queries * p.neighbors() + queries * padded(chunk) + key_box_elems(p, tile, chunk);
}
DINAT_M2F_HOST_DEVICE int64_t av_smem_elems(const Problem& p, int tile, int chunk) {
  return int64_t(tile) * tile * p.neighbors() + key_box_elems(p, tile, chunk);
}

// Per-axis placement of a tile: its queries and the box of keys they read.
struct TileAxis {
  int group;
  int group_len;
  int first_pos;  // in-group position of the tile's first query
  int count;      // queries of the tile on this axis
  int box_start;  // in-group position of the first key of the box
  int box_len;

  DINAT_M2F_HOST_DEVICE int token(int pos, int dilation) const { return group + pos * dilation; }
  // Box row (or column) of neighbor `slot` of the tile's query `q`.
  DINAT_M2F_HOST_DEVICE int box_index(int q, int slot, int kernel) const {
    return window_start(first_pos + q, group_len, kernel) - box_start + slot;
  }
  DINAT_M2F_HOST_DEVICE int bias_index(int q, int slot, int kernel) const {
    return window_start(first_pos + q, group_len, kernel) + slot - (first_pos + q) + kernel - 1;
  }
};

struct Tile {
  int64_t batch;
  int head;
  TileAxis h;
  TileAxis w;
};

DINAT_M2F_HOST_DEVICE bool place_axis(const Axis& a, int group, int tile_index, int tile,
                                      TileAxis* out) {
  out->group = group;
  out->group_len = group_length(a, group);
  out->first_pos = tile_index * tile;
  if (out->first_pos >= out->group_len) return false;
  const int remaining = out->group_len - out->first_pos;
  out->count = remaining < tile ? remaining : tile;
  out->box_start = window_start(out->first_pos, out->group_len, a.kernel);
  const int last_start = window_start(out->first_pos + out->count - 1, out->group_len, a.kernel);
  out->box_len = last_start + a.kernel - out->box_start;
  return true;
}

// Decodes a block index; false for tiles past the end of a short dilation group.
DINAT_M2F_HOST_DEVICE bool locate_tile(int64_t block, const Problem& p, int tile, Tile* t) {
  const int tiles_w = tiles_along(p.w, tile);
  const int tiles_h = tiles_along(p.h, tile);
  const int tile_w = int(block % tiles_w);
  block /= tiles_w;
  const int tile_h = int(block % tiles_h);
  block /= tiles_h;
  const int group_w = int(block % p.w.dilation);
  block /= p.w.dilation;
  const int group_h = int(block % p.h.dilation);
  block /= p.h.dilation;
  t->head = int(block % p.heads);
  t->batch = block / p.heads;
  return place_axis(p.h, group_h, tile_h, tile, &t->h) &&
         place_axis(p.w, group_w, tile_w, tile, &t->w);
}

// Flat (batch, height, width) token index of the tile's query or box entry.
DINAT_M2F_HOST_DEVICE int64_t query_token(const Problem& p, const Tile& t, int q) {
  const int qh = q / t.w.count, qw = q % t.w.count;
  return token_of(t.batch, t.h.token(t.h.first_pos + qh, p.h.dilation),
                  t.w.token(t.w.first_pos + qw, p.w.dilation), p);
}
DINAT_M2F_HOST_DEVICE int64_t box_token(const Problem& p, const Tile& t, int box) {
  const int bh = box / t.w.box_len, bw = box % t.w.box_len;
  return token_of(t.batch, t.h.token(t.h.box_start + bh, p.h.dilation),
                  t.w.token(t.w.box_start + bw, p.w.dilation), p);
}
// Box entry read by neighbor n of query q.
DINAT_M2F_HOST_DEVICE int box_of_neighbor(const Problem& p, const Tile& t, int q, int n) {
  const int qh = q / t.w.count, qw = q % t.w.count;
  const int nh = n / p.w.kernel, nw = n % p.w.kernel;
  return t.h.box_index(qh, nh, p.h.kernel) * t.w.box_len + t.w.box_index(qw, nw, p.w.kernel);
}

// Stages channels [c0, c0 + count) of every box token of `src` into `box`.
template <typename T, typename Acc>
DINAT_M2F_DEVICE void stage_box(const Problem& p, const Tile& t, const T* src, int c0, int count,
                                Acc* box) {
  const int entries = t.h.box_len * t.w.box_len * count;
  for (int e = threadIdx.x; e < entries; e += blockDim.x) {
    const int b = e / count, c = e % count;
    box[b * padded(count) + c] = Acc(src[(box_token(p, t, b) * p.heads + t.head) * p.dim + c0 + c]);
  }
}

// attn[q, n] = <query[q], key[neighbor n of q]> (+ rpb): logits for the tile's queries.
// smem: tile*tile*K accumulators, then the query chunk, then the key box chunk.
template <typename T, typename Acc>
DINAT_M2F_DEVICE void qk_tile_program(const Problem& p, const Tile& t, int tile, int chunk,
                                      const T* query, const T* key, const T* rpb, T* attn,
                                      Acc* smem) {
  const int K = p.neighbors();
  const int queries = t.h.count * t.w.count;
  Acc* acc = smem;
  Acc* q_chunk = acc + tile * tile * K;
  Acc* k_box = q_chunk + tile * tile * padded(chunk);

  for (int e = threadIdx.x; e < queries * K; e += blockDim.x) acc[e] = Acc(0);
  for (int c0 = 0; c0 < p.dim; c0 += chunk) {
    const int count = p.dim - c0 < chunk ? p.dim - c0 : chunk;
    for (int e = threadIdx.x; e < queries * count; e += blockDim.x) {
      const int q = e / count, c = e % count;
      q_chunk[q * padded(count) + c] =
          Acc(query[(query_token(p, t, q) * p.heads + t.head) * p.dim + c0 + c]);
    }
    stage_box(p, t, key, c0, count, k_box);
    __syncthreads();
    for (int e = threadIdx.x; e < queries * K; e += blockDim.x) {
      const int q = e / K, n = e % K;
      const Acc* qr = q_chunk + q * padded(count);
      const Acc* kr = k_box + box_of_neighbor(p, t, q, n) * padded(count);
      Acc sum = Acc(0);
      for (int c = 0; c < count; ++c) sum += qr[c] * kr[c];
      acc[e] += sum;
    }
    __syncthreads();
  }
  const int bias_w = 2 * p.w.kernel - 1;
  const int bias_hw = (2 * p.h.kernel - 1) * bias_w;
  for (int e = threadIdx.x; e < queries * K; e += blockDim.x) {
    const int q = e / K, n = e % K;
    Acc value = acc[e];
    if (rpb != nullptr) {
      const int qh = q / t.w.count, qw = q % t.w.count;
      const int bh = t.h.bias_index(qh, n / p.w.kernel, p.h.kernel);
      const int bw = t.w.bias_index(qw, n % p.w.kernel, p.w.kernel);
      value += Acc(rpb[t.head * bias_hw + bh * bias_w + bw]);
    }
    attn[(query_token(p, t, q) * p.heads + t.head) * K + n] = T(value);
  }
}

// out[q] = sum_n attn[q, n] * value[neighbor n of q] for the tile's queries.
// smem: the tile's attention weights, then the value box chunk.
template <typename T, typename Acc>
DINAT_M2F_DEVICE void av_tile_program(const Problem& p, const Tile& t, int tile, int chunk,
                                      const T* attn, const T* value, T* out, Acc* smem) {
  const int K = p.neighbors();
  const int queries = t.h.count * t.w.count;
  Acc* weights = smem;
  Acc* v_box = weights + tile * tile * K;

  for (int e = threadIdx.x; e < queries * K; e += blockDim.x) {
    const int q = e / K, n = e % K;
    weights[e] = Acc(attn[(query_token(p, t, q) * p.heads + t.head) * K + n]);
  }
  for (int c0 = 0; c0 < p.dim; c0 += chunk) {
    const int count = p.dim - c0 < chunk ? p.dim - c0 : chunk;
    stage_box(p, t, value, c0, count, v_box);
    __syncthreads();
    for (int e = threadIdx.x; e < queries * count; e += blockDim.x) {
      const int q = e / count, c = e % count;
      Acc sum = Acc(0);
      for (int n = 0; n < K; ++n)
        sum += weights[q * K + n] * v_box[box_of_neighbor(p, t, q, n) * padded(count) + c];
      out[(query_token(p, t, q) * p.heads + t.head) * p.dim + c0 + c] = T(sum);
    }
    __syncthreads();
  }
}

// Shared memory a block may use without opting in (the kernels use no static shared memory).
constexpr int64_t kSharedBudget = 48 * 1024;

struct TilePlan {
  bool use;
  int tile;
  int chunk;
  int64_t smem_bytes;
};

// The tiled kernels cover DiNAT's shapes: 2D, kernel 3..13, head dim 32 or 64. The tile is
// the largest that fits the shared-memory budget, and no larger than the longest group needs.
// Host code of both builds (the GPU's and the emulated device's launches).
template <typename Elems>
inline TilePlan plan_tiles(const Problem& p, int64_t acc_size, Elems smem_elems) {
  const TilePlan none{false, 0, 0, 0};
  if (p.h.kernel < 3 || p.h.kernel > 13 || p.w.kernel < 3 || p.w.kernel > 13) return none;
  if (p.dim != 32 && p.dim != 64) return none;
  const int longest_h = (p.h.length + p.h.dilation - 1) / p.h.dilation;
  const int longest_w = (p.w.length + p.w.dilation - 1) / p.w.dilation;
  const int longest = longest_h > longest_w ? longest_h : longest_w;
  for (int tile : {16, 8, 4, 2}) {
    if (tile / 2 >= longest) continue;
    if (num_blocks(p, tile) > INT32_MAX) return none;  // gridDim.x; smaller tiles need more
    for (int chunk : {32, 16}) {
      const int64_t bytes = smem_elems(p, tile, chunk) * acc_size;
      if (bytes <= kSharedBudget) return TilePlan{true, tile, chunk, bytes};
    }
  }
  return none;
}

}  // namespace tiled
}  // namespace na
}  // namespace dinat_m2f
