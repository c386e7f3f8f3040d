// Optimiser bindings: one call per parameter for the update optim.SGD spelled as five NumPy
// operations (each a Python-level call), and zeroing a list of gradients in one call.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

// A parameter's array updated in place: float32, C-contiguous, writable (no conversion).
float* inplace(py::handle o, const char* fn, const char* arg, int64_t n) {
  if (!py::array_t<float, py::array::c_style>::check_(o))
    throw py::type_error(std::string(fn) + ": " + arg +
                         " must be a C-contiguous float32 array");
  auto a = py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(o);
  if (n >= 0 && a.size() != n)
    value_error(fn, std::string(arg) + " has " + std::to_string(a.size()) +
                                  " values, the parameter " + std::to_string(n));
  return a.mutable_data();
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("sgd_update", [](py::handle po, py::handle go, py::handle bo, double lr, double momentum,
                         double dampening, bool nesterov, double weight_decay, bool first) {
    float* p = inplace(po, "sgd_update", "param", -1);
    const int64_t n = py::reinterpret_borrow<py::array>(po).size();
    const float* g = inplace(go, "sgd_update", "grad", n);
    float* b = bo.is_none() ? nullptr : inplace(bo, "sgd_update", "momentum_buffer", n);
    const SgdArgs a{static_cast<float>(lr), static_cast<float>(momentum),
                    static_cast<float>(dampening), static_cast<float>(1.0 - dampening),
                    static_cast<float>(weight_decay), nesterov, first};
    py::gil_scoped_release nogil;
    sgd_update(p, g, b, n, a);
  }, py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"), py::arg("lr"),
     py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"), py::arg("weight_decay"),
     py::arg("first"), "PyTorch's SGD update of one parameter in place (convkit.h: sgd_update).");
  m.def("zero_arrays", [](py::list arrays) {
    for (py::handle o : arrays) {
      float* p = inplace(o, "zero_arrays", "array", -1);
      std::fill(p, p + py::reinterpret_borrow<py::array>(o).size(), 0.f);
    }
  }, py::arg("arrays"), "Sets every float32 array of the list to zeros.");
}

}  // namespace bind
}  // namespace convkit
