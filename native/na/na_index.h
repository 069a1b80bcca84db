// Index maths of (dilated) neighborhood attention, shared by the CPU and CUDA kernels.
//
// Semantics (NATTEN's, see docs): on an axis of length L with odd kernel k and dilation d,
// token i belongs to group g = i % d at in-group position p = i / d; its window in group
// coordinates starts at clamp(p - k/2, 0, Lg - k) and holds k keys, so windows shift inward
// at the borders instead of being cut. The relative-position-bias index of neighbor j is
// start + j - p + k - 1.
//
// 1D problems run through the 2D kernels with a dummy leading axis of length 1, kernel 1
// and dilation 1: that axis then contributes exactly one neighbor (the token itself) and one
// bias column.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace dinat_m2f {
namespace na {

// One spatial axis of the problem.
struct Axis {
  int length;
  int kernel;
  int dilation;
};

// Shapes of a 2D problem; tensors are contiguous (batch, height, width, heads, dim).
struct Problem {
  int64_t batch;
  int heads;
  int dim;  // head dim of the tensor being reduced or produced
  Axis h;
  Axis w;

  DINAT_M2F_HOST_DEVICE int neighbors() const { return h.kernel * w.kernel; }
  DINAT_M2F_HOST_DEVICE int64_t tokens() const { return batch * h.length * w.length; }
};

// Tokens in dilation group `group`.
DINAT_M2F_HOST_DEVICE int group_length(const Axis& a, int group) {
  return (a.length - group + a.dilation - 1) / a.dilation;
}

// First in-group position of the window of the query at in-group position `pos`.
DINAT_M2F_HOST_DEVICE int window_start(int pos, int group_len, int kernel) {
  int start = pos - kernel / 2;
  if (start < 0) start = 0;
  const int last = group_len - kernel;
  return start > last ? last : start;
}

// Window of token `index` on one axis: neighbor j is `first + j * step` and its bias index
// is `bias_first + j`.
struct Window {
  int first;
  int step;
  int bias_first;
};

DINAT_M2F_HOST_DEVICE Window window_of(int index, const Axis& a) {
  const int group = index % a.dilation;
  const int pos = index / a.dilation;
  const int start = window_start(pos, group_length(a, group), a.kernel);
  return {group + start * a.dilation, a.dilation, start - pos + a.kernel - 1};
}

// Queries on one axis whose window holds key `key`: candidates are the in-group positions
// within kernel-1 of the key (a query is always inside its own window), and `slot_in_window`
// says whether (and where) a candidate's window holds the key.
struct InverseRange {
  int group;
  int key_pos;
  int group_len;
  int first_pos;
  int last_pos;  // inclusive
};

DINAT_M2F_HOST_DEVICE InverseRange inverse_range(int key, const Axis& a) {
  InverseRange r;
  r.group = key % a.dilation;
  r.key_pos = key / a.dilation;
  r.group_len = group_length(a, r.group);
  r.first_pos = r.key_pos - a.kernel + 1 < 0 ? 0 : r.key_pos - a.kernel + 1;
  r.last_pos =
      r.key_pos + a.kernel - 1 > r.group_len - 1 ? r.group_len - 1 : r.key_pos + a.kernel - 1;
  return r;
}

// Neighbor slot of the key within the window of the query at in-group position `pos`,
// or -1 when the window does not hold it.
DINAT_M2F_HOST_DEVICE int slot_in_window(const InverseRange& r, int pos, int kernel) {
  const int slot = r.key_pos - window_start(pos, r.group_len, kernel);
  return (slot >= 0 && slot < kernel) ? slot : -1;
}

// Calls visit(query_h, query_w, slot) for every query whose window holds the key at
// (key_h, key_w), slot being the key's row-major index in that window.
template <typename Visit>
DINAT_M2F_HOST_DEVICE void for_each_query_of_key(int key_h, int key_w, const Problem& p,
                                                 Visit&& visit) {
  const InverseRange rh = inverse_range(key_h, p.h), rw = inverse_range(key_w, p.w);
  for (int ph = rh.first_pos; ph <= rh.last_pos; ++ph) {
    const int slot_h = slot_in_window(rh, ph, p.h.kernel);
    if (slot_h < 0) continue;
    for (int pw = rw.first_pos; pw <= rw.last_pos; ++pw) {
      const int slot_w = slot_in_window(rw, pw, p.w.kernel);
      if (slot_w < 0) continue;
      visit(rh.group + ph * p.h.dilation, rw.group + pw * p.w.dilation,
            slot_h * p.w.kernel + slot_w);
    }
  }
}

// Position of a flat (batch, height, width) token index.
struct TokenCoords {
  int64_t batch;
  int h;
  int w;
};

DINAT_M2F_HOST_DEVICE TokenCoords coords_of(int64_t token, const Problem& p) {
  return {token / (int64_t(p.h.length) * p.w.length), int((token / p.w.length) % p.h.length),
          int(token % p.w.length)};
}

DINAT_M2F_HOST_DEVICE int64_t token_of(int64_t batch, int h, int w, const Problem& p) {
  return (batch * p.h.length + h) * p.w.length + w;
}

}  // namespace na
}  // namespace dinat_m2f
