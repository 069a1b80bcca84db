// The extension module `dinat_m2f._C` and every op schema it provides, declared here once.
// Each device file registers its kernels for its dispatch key (TORCH_LIBRARY_IMPL), and the
// dispatcher routes a call by its tensors' device; fake kernels and autograd are registered
// from Python (dinat_m2f/ops/). Importing the module loads the shared library, whose static
// initialisers do all of this; the module itself is empty.
#include <Python.h>
#include <torch/library.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

namespace {

// Every op's schema: neighborhood attention (native/na/na_ops.h) and multi-scale deformable
// attention (native/ms_deform_attn/ms_deform_attn_ops.h).
constexpr const char* kSchemas[] = {
    "na_qk(Tensor query, Tensor key, Tensor? rpb, int[] kernel_size, int[] dilation) -> Tensor",
    "na_av(Tensor attn, Tensor value, int[] kernel_size, int[] dilation) -> Tensor",
    "na_qk_backward(Tensor grad_attn, Tensor query, Tensor key, int[] kernel_size, "
    "int[] dilation) -> (Tensor, Tensor)",
    "na_av_backward(Tensor grad_out, Tensor attn, Tensor value, int[] kernel_size, "
    "int[] dilation) -> (Tensor, Tensor)",
    "na_rpb_backward(Tensor grad_attn, int[] kernel_size, int[] dilation) -> Tensor",
    "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
    "Tensor sampling_locations, Tensor attention_weights) -> Tensor",
    "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
    "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
    "-> (Tensor, Tensor, Tensor)",
};

// Fused NA, CPU only (native/na/na_cpu_fused.cpp; CUDA tensors take the Triton kernels of
// dinat_m2f/ops/na/fused.py, whose ops have the same signatures): out and the log2-sum-exp
// per query, and the backward from them.
constexpr const char* kCpuSchemas[] = {
    "na_fused(Tensor query, Tensor key, Tensor value, Tensor? rpb, int[] kernel_size, "
    "int[] dilation, float scale) -> (Tensor, Tensor)",
    "na_fused_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor? rpb, "
    "Tensor out, Tensor lse, int[] kernel_size, int[] dilation, float scale) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
};

}  // namespace

TORCH_LIBRARY(dinat_m2f, m) {
  for (const char* schema : kSchemas) m.def(schema);
  for (const char* schema : kCpuSchemas) m.def(schema);
}

// Test-only ops, never called by the package: the same ops for CPU tensors, computed by the
// CUDA kernels on the emulated device (native/testing/emulated_device.cpp), and the tiled NA
// kernels with a given tile and head-dim chunk, their launch plan, and the launch census.
TORCH_LIBRARY(dinat_m2f_testing, m) {
  for (const char* schema : kSchemas) m.def(schema);
  m.def(
      "na_qk_tiled(Tensor query, Tensor key, Tensor? rpb, int[] kernel_size, "
      "int[] dilation, int tile, int chunk) -> Tensor");
  m.def(
      "na_av_tiled(Tensor attn, Tensor value, int[] kernel_size, int[] dilation, "
      "int tile, int chunk) -> Tensor");
  // the launch plan of the tiled "qk" or "av" kernel for `like`'s shape and dtype:
  // [tile, chunk, shared-memory bytes], tile 0 when the naive kernel runs
  m.def("na_tile_plan(Tensor like, int[] kernel_size, int[] dilation, str kernel) -> int[]");
  // every kernel the emulated device has run in this process, with its launch count and
  // largest launch (see native/common/simt_emulator.h)
  m.def("launch_census() -> str[]");
}
