// Activation and dropout bindings: elementwise over any shape.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

const char* const kNames[] = {"relu", "leaky_relu", "sigmoid", "tanh", "elu"};
const char* const kBwdNames[] = {"relu_backward", "leaky_relu_backward", "sigmoid_backward",
                                 "tanh_backward", "elu_backward"};

// f(x), or f(x + add) (a residual sum and its activation in one pass)
FArr act_fwd(int kind, py::handle xo, float param, py::handle addo) {
  FArr x = to_float(xo, kNames[kind], "input");
  FArr add;
  if (!addo.is_none()) {
    add = to_float(addo, kNames[kind], "add");
    expect_shape(add, shape_of(x), kNames[kind], "add");
  }
  FArr y = empty(shape_of(x));
  const int64_t n = x.size();
  float* yp = y.mutable_data();
  const float *xp = x.data(), *ap = addo.is_none() ? nullptr : add.data();
  {
    py::gil_scoped_release nogil;
    activation_forward(static_cast<Act>(kind), param, yp, xp, n, ap);
  }
  return y;
}

FArr act_bwd(int kind, py::handle dyo, py::handle xo, float param) {
  const char* fn = kBwdNames[kind];
  FArr x = to_float(xo, fn, "input");
  FArr dy = to_float(dyo, fn, "grad_out");
  expect_shape(dy, shape_of(x), fn, "grad_out");
  FArr dx = empty(shape_of(x));
  const int64_t n = x.size();
  float* dxp = dx.mutable_data();
  const float *dyp = dy.data(), *xp = x.data();
  {
    py::gil_scoped_release nogil;
    activation_backward(static_cast<Act>(kind), param, dxp, dyp, xp, n);
  }
  return dx;
}

void check_p(const char* fn, double p) {
  if (!(p >= 0.0 && p <= 1.0))
    value_error(fn, "expected dropout probability p in [0, 1], but got " + std::to_string(p));
}

}  // namespace

FArr activation_call(int kind, py::handle x, float param, py::handle add) {
  return act_fwd(kind, x, param, add);
}

FArr activation_backward_call(int kind, py::handle dy, py::handle x, float param) {
  return act_bwd(kind, dy, x, param);
}

void bind_activation(py::module_& m) {
  m.def("activation", &act_fwd, py::arg("kind"), py::arg("x"), py::arg("param"),
        py::arg("add") = py::none());
  m.def("activation_backward", &act_bwd, py::arg("kind"), py::arg("grad_out"), py::arg("x"),
        py::arg("param"));

  m.def("dropout", [](py::handle xo, double p, uint64_t seed) {
    check_p("dropout", p);
    FArr x = to_float(xo, "dropout", "input");
    FArr y = empty(shape_of(x)), mask = empty(shape_of(x));
    const int64_t n = x.size();
    float *yp = y.mutable_data(), *mp = mask.mutable_data();
    const float* xp = x.data();
    {
      py::gil_scoped_release nogil;
      dropout_forward(yp, mp, xp, n, static_cast<float>(p), seed);
    }
    return py::make_tuple(y, mask);
  }, py::arg("x"), py::arg("p"), py::arg("seed"));

  m.def("dropout_backward", [](py::handle dyo, py::handle masko, double p) {
    const char* fn = "dropout_backward";
    check_p(fn, p);
    FArr dy = to_float(dyo, fn, "grad_out");
    FArr mask = to_float(masko, fn, "mask");
    expect_shape(mask, shape_of(dy), fn, "mask");
    FArr dx = empty(shape_of(dy));
    const int64_t n = dy.size();
    float* dxp = dx.mutable_data();
    const float *dyp = dy.data(), *mp = mask.data();
    {
      py::gil_scoped_release nogil;
      dropout_backward(dxp, dyp, mp, n, static_cast<float>(p));
    }
    return dx;
  }, py::arg("grad_out"), py::arg("mask"), py::arg("p"));
}

}  // namespace bind
}  // namespace convkit
