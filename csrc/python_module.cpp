// Python module stub: lets `import ghn_ext._C` load this shared library, which registers the
// operators (static TORCH_LIBRARY initialisers) with the dispatcher. The module itself is empty;
// the ops are reached through torch.ops.ghn_ext.*. Compiled by setup.py only (CMake builds a plain
// shared library without Python).
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "ghn_ext compiled operators; use torch.ops.ghn_ext.* or the wrappers in ghn_ext.ops",
      -1,    // size
      nullptr,
  };
  return PyModule_Create(&module_def);
}
