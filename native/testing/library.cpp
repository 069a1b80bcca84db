// The test extension module `dinat_m2f._C_testing`: built beside `dinat_m2f._C` by setup.py,
// loaded only by the tests (tests/emulated_device.py), never by the package, so the library
// users load holds only the ops they call. Like native/library.cpp, the module is empty and
// its static initialisers register the library below and its kernels.
#include <Python.h>
#include <torch/library.h>

#include "../op_schemas.h"

extern "C" PyMODINIT_FUNC PyInit__C_testing(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_testing", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

// The library dinat_m2f_testing: the ops users call, for CPU tensors, computed by the CUDA
// kernels on the emulated device (emulated_device.cpp), and the tiled NA kernels with a given
// tile and head-dim chunk, their launch plan, and the launch census.
TORCH_LIBRARY(dinat_m2f_testing, m) {
  for (const char* schema : dinat_m2f::kOpSchemas) m.def(schema);
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
