// linear bindings: x (..., in_features) -> y (..., out_features).
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

struct LinArgs {
  FArr x, w;
  py::object b;
  int64_t N, I, O;
};

LinArgs check_linear(const char* fn, py::handle xo, py::handle wo, py::handle bo) {
  LinArgs a{to_float(xo, fn, "input"), to_float(wo, fn, "weight"), py::none(), 1, 0, 0};
  expect_ndim(a.w, 2, fn, "weight", "(out_features, in_features)");
  a.O = a.w.shape(0);
  a.I = a.w.shape(1);
  if (a.x.ndim() < 1 || a.x.shape(a.x.ndim() - 1) != a.I)
    value_error(fn, "weight " + shape_str(a.w) + " expects inputs with " + std::to_string(a.I) +
                        " features in the last dimension, but input has shape " +
                        shape_str(a.x));
  for (py::ssize_t i = 0; i + 1 < a.x.ndim(); ++i) a.N *= a.x.shape(i);
  a.b = optional_bias(bo, a.O, a.w, fn);
  return a;
}

std::vector<int64_t> out_shape(const FArr& x, int64_t last) {
  std::vector<int64_t> s = shape_of(x);
  s.back() = last;
  return s;
}

template <bool Ref>
FArr lin_fwd(py::handle xo, py::handle wo, py::handle bo, bool relu) {
  LinArgs a = check_linear("linear", xo, wo, bo);
  FArr y = empty(out_shape(a.x, a.O));
  float* yp = y.mutable_data();
  const float *xp = a.x.data(), *wp = a.w.data(), *bp = bias_ptr(a.b);
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::linear_forward(yp, xp, wp, bp, a.N, a.I, a.O);
    else linear_forward(yp, xp, wp, bp, a.N, a.I, a.O);
  }
  if (relu) relu_in_place(y);
  return y;
}

}  // namespace

py::tuple linear_backward_call(py::handle dyo, py::handle xo, py::handle wo, py::handle bo) {
  const char* fn = "linear_backward";
  LinArgs a = check_linear(fn, xo, wo, bo);
  FArr dy = to_float(dyo, fn, "grad_out");
  expect_shape(dy, out_shape(a.x, a.O), fn, "grad_out");
  FArr dx = empty(shape_of(a.x)), dw = empty({a.O, a.I});
  py::object db = py::none();
  float* dbp = nullptr;
  if (!a.b.is_none()) {
    FArr t = empty({a.O});
    dbp = t.mutable_data();
    db = t;
  }
  float *dxp = dx.mutable_data(), *dwp = dw.mutable_data();
  const float *dyp = dy.data(), *xp = a.x.data(), *wp = a.w.data();
  {
    py::gil_scoped_release nogil;
    linear_backward(dxp, dwp, dbp, dyp, xp, wp, a.N, a.I, a.O);
  }
  return py::make_tuple(dx, dw, db);
}

FArr linear_call(py::handle x, py::handle w, py::handle b, bool relu) {
  return lin_fwd<false>(x, w, b, relu);
}

void bind_linear(py::module_& m) {
  m.def("linear", &lin_fwd<false>, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("relu") = false);  // relu: and the ReLU after it, in the same call
  m.def("ref_linear", &lin_fwd<true>, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("relu") = false);
  m.def("linear_backward", &linear_backward_call, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("bias"));
}

}  // namespace bind
}  // namespace convkit
