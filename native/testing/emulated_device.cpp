// The emulated device (common/simt_emulator.h) as test-only ops for CPU tensors, in the
// dinat_m2f_testing library: the CUDA kernels of both op families, with the very host code
// of the GPU build (checks, planning, launches), run on CPU threads. The test-suite runs the
// CUDA tests against them (tests/layers/*_cuda.py), so every __global__ function executes in
// CI. Never used by the package itself.
//
//   dinat_m2f_testing::{na_qk, na_av, na_qk_backward, na_av_backward, na_rpb_backward,
//                       ms_deform_attn, ms_deform_attn_backward}   as in dinat_m2f::
//   dinat_m2f_testing::na_{qk,av}_tiled(..., tile, chunk)   the tiled kernel with a given
//       tile and head-dim chunk (both 0: the plan the launch would choose)
//   dinat_m2f_testing::na_tile_plan(like, kernel_size, dilation, "qk" | "av")   that plan
//   dinat_m2f_testing::launch_census()   the kernels run so far, with counts and sizes
#include "../ms_deform_attn/ms_deform_attn_device_ops.h"
#include "../na/na_device_ops.h"

namespace dinat_m2f {
namespace na {
namespace {

// The plan of a tiled launch: the given tile and chunk, or (both 0) the planner's.
tiled::TilePlan chosen_plan(const char* op, const Problem& p, int64_t tile, int64_t chunk,
                            const tiled::TilePlan& planned, int64_t smem_elems, int64_t acc_size) {
  TORCH_CHECK_VALUE((tile == 0 && chunk == 0) || (tile >= 1 && chunk >= 1), op,
                    ": tile and chunk must be >= 1, or both 0 for the CUDA launch's choice, "
                    "got ",
                    tile, ", ", chunk);
  if (tile != 0) return tiled::TilePlan{true, int(tile), int(chunk), smem_elems * acc_size};
  TORCH_CHECK_VALUE(planned.use, op, ": the CUDA tiled kernels do not apply to this shape: ",
                    "they need 2D, kernel_size 3..13 and head dim 32 or 64 (got kernel ",
                    p.h.kernel, "x", p.w.kernel, ", head dim ", p.dim, ")");
  return planned;
}

at::Tensor qk_tiled(const at::Tensor& query, const at::Tensor& key,
                    const c10::optional<at::Tensor>& rpb, at::IntArrayRef kernel_size,
                    at::IntArrayRef dilation, int64_t tile, int64_t chunk) {
  const char* op = "na_qk_tiled";
  const Problem p = make_problem(op, "query", query, kernel_size, dilation);
  check_pair(op, "query", query, "key", key);
  const int64_t rank = kernel_size.size();
  const at::Tensor bias = checked_rpb(op, rpb, p, query);
  const at::Tensor q = as_2d(query, rank), k = as_2d(key, rank);
  at::Tensor attn = empty_2d(p, p.neighbors(), query);
  DINAT_M2F_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na_qk_tiled", [&] {
    using Acc = simt::acc_t<scalar_t>;
    const tiled::TilePlan plan =
        chosen_plan(op, p, tile, chunk, emulated::qk_plan<scalar_t>(p),
                    tile ? tiled::qk_smem_elems(p, int(tile), int(chunk)) : 0, sizeof(Acc));
    emulated::launch_qk_tiled<scalar_t>(q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                                        data_or_null<scalar_t>(bias),
                                        attn.mutable_data_ptr<scalar_t>(), p, plan, nullptr);
  });
  return from_2d(attn, rank);
}

at::Tensor av_tiled(const at::Tensor& attn, const at::Tensor& value, at::IntArrayRef kernel_size,
                    at::IntArrayRef dilation, int64_t tile, int64_t chunk) {
  const char* op = "na_av_tiled";
  const Problem p = make_problem(op, "value", value, kernel_size, dilation);
  check_attn(op, "attn", attn, p, value);
  const int64_t rank = kernel_size.size();
  const at::Tensor a = as_2d(attn, rank), v = as_2d(value, rank);
  at::Tensor out = empty_2d(p, p.dim, value);
  DINAT_M2F_DISPATCH_FLOATING_TYPES(value.scalar_type(), "na_av_tiled", [&] {
    using Acc = simt::acc_t<scalar_t>;
    const tiled::TilePlan plan =
        chosen_plan(op, p, tile, chunk, emulated::av_plan<scalar_t>(p),
                    tile ? tiled::av_smem_elems(p, int(tile), int(chunk)) : 0, sizeof(Acc));
    emulated::launch_av_tiled<scalar_t>(a.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                                        out.mutable_data_ptr<scalar_t>(), p, plan, nullptr);
  });
  return from_2d(out, rank);
}

std::vector<int64_t> tile_plan(const at::Tensor& like, at::IntArrayRef kernel_size,
                               at::IntArrayRef dilation, c10::string_view kernel) {
  const char* op = "na_tile_plan";
  const Problem p = make_problem(op, "like", like, kernel_size, dilation);
  TORCH_CHECK_VALUE(kernel == "qk" || kernel == "av", op, ": kernel must be \"qk\" or ",
                    "\"av\", got \"", kernel, "\"");
  tiled::TilePlan plan;
  DINAT_M2F_DISPATCH_FLOATING_TYPES(like.scalar_type(), "na_tile_plan", [&] {
    plan = kernel == "qk" ? emulated::qk_plan<scalar_t>(p) : emulated::av_plan<scalar_t>(p);
  });
  if (!plan.use) return {0, 0, 0};
  return {plan.tile, plan.chunk, plan.smem_bytes};
}

}  // namespace
}  // namespace na

TORCH_LIBRARY_IMPL(dinat_m2f_testing, CPU, m) {
  na::register_ops<na::emulated::DeviceKernels>(m);
  ms_deform_attn::register_ops<ms_deform_attn::emulated::DeviceKernels>(m);
  m.impl("na_qk_tiled", &na::qk_tiled);
  m.impl("na_av_tiled", &na::av_tiled);
  m.impl("na_tile_plan", &na::tile_plan);
}

// No tensor argument to dispatch on: CompositeExplicitAutograd also serves such calls.
TORCH_LIBRARY_IMPL(dinat_m2f_testing, CompositeExplicitAutograd, m) {
  m.impl("launch_census", [] { return simt::emulator::launch_census(); });
}

}  // namespace dinat_m2f
