// Python module `dinat_m2f._C`. Importing it loads the shared library, whose static
// initialisers register the `torch.ops.dinat_m2f.*` ops; the module itself is empty.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
