// softmax / log_softmax bindings: any shape, any axis.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

// (outer, L, inner) of x around `axis` (negative counts from the end)
void split_axis(const char* fn, const py::array& x, int64_t axis, int64_t* outer, int64_t* L,
                int64_t* inner) {
  const int64_t nd = x.ndim() == 0 ? 1 : x.ndim();
  if (axis < -nd || axis >= nd)
    value_error(fn, "expected axis in [" + std::to_string(-nd) + ", " + std::to_string(nd - 1) +
                        "] for input of shape " + shape_str(x) + ", but got " +
                        std::to_string(axis));
  if (axis < 0) axis += nd;
  *outer = 1;
  *inner = 1;
  *L = x.ndim() == 0 ? 1 : x.shape(axis);
  for (int64_t i = 0; i < axis; ++i) *outer *= x.shape(i);
  for (int64_t i = axis + 1; i < x.ndim(); ++i) *inner *= x.shape(i);
}

FArr sm_fwd(py::handle xo, int64_t axis, bool log) {
  const char* fn = log ? "log_softmax" : "softmax";
  FArr x = to_float(xo, fn, "input");
  int64_t outer, L, inner;
  split_axis(fn, x, axis, &outer, &L, &inner);
  FArr y = empty(shape_of(x));
  float* yp = y.mutable_data();
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    softmax_forward(yp, xp, outer, L, inner, log);
  }
  return y;
}

// from_output: xo is the forward's output (the layers' backward), not its input
FArr sm_bwd(py::handle dyo, py::handle xo, int64_t axis, bool log, bool from_output) {
  const char* fn = log ? "log_softmax_backward" : "softmax_backward";
  FArr x = to_float(xo, fn, from_output ? "output" : "input");
  FArr dy = to_float(dyo, fn, "grad_out");
  expect_shape(dy, shape_of(x), fn, "grad_out");
  int64_t outer, L, inner;
  split_axis(fn, x, axis, &outer, &L, &inner);
  FArr dx = empty(shape_of(x));
  float* dxp = dx.mutable_data();
  const float *dyp = dy.data(), *xp = x.data();
  {
    py::gil_scoped_release nogil;
    if (from_output)
      softmax_backward_from_output(dxp, dyp, xp, outer, L, inner, log);
    else
      softmax_backward(dxp, dyp, xp, outer, L, inner, log);
  }
  return dx;
}

}  // namespace

void bind_softmax(py::module_& m) {
  m.def("softmax", &sm_fwd, py::arg("x"), py::arg("axis"), py::arg("log"));
  m.def("softmax_backward", &sm_bwd, py::arg("grad_out"), py::arg("x"), py::arg("axis"),
        py::arg("log"), py::arg("from_output") = false);
}

}  // namespace bind
}  // namespace convkit
