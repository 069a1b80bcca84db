// The extension module `dinat_m2f._C` and the library of the ops users call, dinat_m2f::
// (schemas: op_schemas.h). Each device file registers its kernels for its dispatch key
// (TORCH_LIBRARY_IMPL), and the dispatcher routes a call by its tensors' device; fake kernels
// and autograd are registered from Python (dinat_m2f/ops/), but for na_fused's autograd
// (native/na/na_cpu_fused_autograd.cpp). Importing the module loads the
// shared library, whose static initialisers do all of this; the module itself is empty.
// Test-only ops are in another module, dinat_m2f._C_testing (native/testing/).
#include <Python.h>
#include <torch/library.h>

#include "op_schemas.h"

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(dinat_m2f, m) {
  for (const char* schema : dinat_m2f::kOpSchemas) m.def(schema);
  for (const char* schema : dinat_m2f::kCpuOnlySchemas) m.def(schema);
}
