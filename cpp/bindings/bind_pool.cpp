// Pooling bindings: max / avg / adaptive pooling, their backward, and the references.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

using IArr = py::array_t<int64_t, py::array::c_style>;

std::string pair_str(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// The window arguments of max_pool2d / avg_pool2d, checked as PyTorch checks them.
struct PoolArgs {
  int64_t kh, kw, sh, sw, ph, pw, dh = 1, dw = 1;
  bool ceil_mode = false, count_include_pad = true;
  int64_t divisor = 0;
};

Pool2dShape check_pool(const char* fn, const FArr& x, const PoolArgs& a) {
  expect_ndim(x, 4, fn, "input", "(N, C, H, W)");
  Pool2dShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3), a.kh, a.kw, a.sh, a.sw, a.ph,
                a.pw, 0, 0};
  s.dh = a.dh;
  s.dw = a.dw;
  s.ceil_mode = a.ceil_mode;
  s.count_include_pad = a.count_include_pad;
  s.divisor = a.divisor;
  const int64_t big = int64_t(1) << 30;
  if (a.kh < 1 || a.kw < 1)
    value_error(fn, "expected kernel_size >= 1, but got " + pair_str(a.kh, a.kw));
  if (a.sh < 1 || a.sw < 1) value_error(fn, "expected stride >= 1, but got " + pair_str(a.sh, a.sw));
  if (a.dh < 1 || a.dw < 1)
    value_error(fn, "expected dilation >= 1, but got " + pair_str(a.dh, a.dw));
  if (a.kh > big || a.kw > big || a.sh > big || a.sw > big || a.dh > big || a.dw > big ||
      a.ph > big || a.pw > big)
    value_error(fn, "kernel_size, stride, padding and dilation must be below 2^30");
  const int64_t eh = a.dh * (a.kh - 1) + 1, ew = a.dw * (a.kw - 1) + 1;  // effective window
  if (a.ph < 0 || a.pw < 0 || 2 * a.ph > a.kh || 2 * a.pw > a.kw)  // PyTorch's rule
    value_error(fn, "expected padding between 0 and half the kernel size " +
                        pair_str(a.kh, a.kw) + ", but got " + pair_str(a.ph, a.pw));
  pool2d_out_size(s);
  if (s.P < 1 || s.Q < 1)
    value_error(fn, "the window " + pair_str(eh, ew) + " is larger than the padded input " +
                        pair_str(s.H + 2 * a.ph, s.W + 2 * a.pw) + " of input " + shape_str(x) +
                        " (output size " + pair_str(s.P, s.Q) + " is too small)");
  checked_numel({s.N, s.C, s.P, s.Q}, fn, "output");
  return s;
}

PoolArgs max_args(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                  int64_t dh, int64_t dw, bool ceil_mode) {
  PoolArgs a{kh, kw, sh, sw, ph, pw};
  a.dh = dh;
  a.dw = dw;
  a.ceil_mode = ceil_mode;
  return a;
}

PoolArgs avg_args(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                  bool ceil_mode, bool count_include_pad, py::handle divisor, const char* fn) {
  PoolArgs a{kh, kw, sh, sw, ph, pw};
  a.ceil_mode = ceil_mode;
  a.count_include_pad = count_include_pad;
  if (!divisor.is_none()) {
    a.divisor = divisor.cast<int64_t>();
    if (a.divisor == 0) value_error(fn, "divisor_override must not be zero");
    if (a.divisor < 0 || a.divisor > (int64_t(1) << 30))
      value_error(fn, "expected divisor_override between 1 and 2^30, but got " +
                          std::to_string(a.divisor));
  }
  return a;
}

// dy checked against the forward's output shape; dx allocated like x
struct Grads {
  FArr x, dy, dx;
};
Grads grads(const char* fn, py::handle dyo, FArr x, const std::vector<int64_t>& out) {
  Grads g{std::move(x), to_float(dyo, fn, "grad_out"), FArr()};
  expect_shape(g.dy, out, fn, "grad_out");
  g.dx = empty(shape_of(g.x));
  return g;
}

// An adaptive pooling's target (P, Q); 0 <= P, Q (0 gives an empty output, as PyTorch's).
void check_adaptive(const char* fn, const FArr& x, int64_t P, int64_t Q) {
  expect_ndim(x, 4, fn, "input", "(N, C, H, W)");
  if (P < 0 || Q < 0 || P > (int64_t(1) << 30) || Q > (int64_t(1) << 30))
    value_error(fn, "expected output_size >= 0, but got " + pair_str(P, Q));
  if ((x.shape(2) == 0 || x.shape(3) == 0) && x.shape(0) * x.shape(1) > 0)
    value_error(fn, "expected input with non-zero height and width, but got input of shape " +
                        shape_str(x));
  checked_numel({x.shape(0), x.shape(1), P, Q}, fn, "output");
}

template <bool Ref>
py::object max_fwd(py::handle xo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int64_t dh, int64_t dw, bool ceil_mode, bool return_indices,
                   bool relu) {
  const char* fn = "max_pool2d";
  FArr x = to_float(xo, fn, "input");
  const Pool2dShape s = check_pool(fn, x, max_args(kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode));
  FArr y = empty({s.N, s.C, s.P, s.Q});
  IArr idx;
  if (return_indices) idx = IArr(std::vector<py::ssize_t>{s.N, s.C, s.P, s.Q});
  float* yp = y.mutable_data();
  int64_t* ip = return_indices ? idx.mutable_data() : nullptr;
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::max_pool2d_forward(yp, xp, s);
    else max_pool2d_forward(yp, ip, xp, s);
  }
  if (relu) relu_in_place(y);
  if (return_indices) return py::make_tuple(y, idx);
  return std::move(y);
}

template <bool Ref>
FArr max_bwd(py::handle dyo, py::handle xo, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
             int64_t ph, int64_t pw, int64_t dh, int64_t dw, bool ceil_mode) {
  const char* fn = "max_pool2d_backward";
  FArr x = to_float(xo, fn, "input");
  const Pool2dShape s = check_pool(fn, x, max_args(kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode));
  Grads g = grads(fn, dyo, std::move(x), {s.N, s.C, s.P, s.Q});
  float* dxp = g.dx.mutable_data();
  const float *dyp = g.dy.data(), *xp = g.x.data();
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::max_pool2d_backward(dxp, dyp, xp, s);
    else max_pool2d_backward(dxp, dyp, xp, s);
  }
  return g.dx;
}

template <bool Ref>
FArr avg_fwd(py::handle xo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
             int64_t pw, bool ceil_mode, bool count_include_pad, py::handle divisor) {
  const char* fn = "avg_pool2d";
  FArr x = to_float(xo, fn, "input");
  const Pool2dShape s = check_pool(
      fn, x, avg_args(kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad, divisor, fn));
  FArr y = empty({s.N, s.C, s.P, s.Q});
  float* yp = y.mutable_data();
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::avg_pool2d_forward(yp, xp, s);
    else avg_pool2d_forward(yp, xp, s);
  }
  return y;
}

template <bool Ref>
FArr avg_bwd(py::handle dyo, py::handle xo, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
             int64_t ph, int64_t pw, bool ceil_mode, bool count_include_pad, py::handle divisor) {
  const char* fn = "avg_pool2d_backward";
  FArr x = to_float(xo, fn, "input");
  const Pool2dShape s = check_pool(
      fn, x, avg_args(kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad, divisor, fn));
  Grads g = grads(fn, dyo, std::move(x), {s.N, s.C, s.P, s.Q});
  float* dxp = g.dx.mutable_data();
  const float* dyp = g.dy.data();
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::avg_pool2d_backward(dxp, dyp, s);
    else avg_pool2d_backward(dxp, dyp, s);
  }
  return g.dx;
}

FArr adaptive_bwd(const char* fn, py::handle dyo, py::handle xo, int64_t P, int64_t Q,
                  bool max) {
  FArr x = to_float(xo, fn, "input");
  check_adaptive(fn, x, P, Q);
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), planes = N * C;
  Grads g = grads(fn, dyo, std::move(x), {N, C, P, Q});
  float* dxp = g.dx.mutable_data();
  const float *dyp = g.dy.data(), *xp = g.x.data();
  {
    py::gil_scoped_release nogil;
    if (max) adaptive_max_pool2d_backward(dxp, dyp, xp, planes, H, W, P, Q);
    else adaptive_avg_pool2d_backward(dxp, dyp, planes, H, W, P, Q);
  }
  return g.dx;
}

#define CK_WINDOW py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw")
#define CK_MAX CK_WINDOW, py::arg("dh") = 1, py::arg("dw") = 1, py::arg("ceil_mode") = false
#define CK_AVG CK_WINDOW, py::arg("ceil_mode") = false, py::arg("count_include_pad") = true, \
               py::arg("divisor_override") = py::none()

}  // namespace

py::object max_pool2d_call(py::handle x, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil,
                           bool relu) {
  return max_fwd<false>(x, k, k, s, s, p, p, d, d, ceil, false, relu);
}

FArr max_pool2d_backward_call(py::handle dy, py::handle x, int64_t k, int64_t s, int64_t p,
                              int64_t d, bool ceil) {
  return max_bwd<false>(dy, x, k, k, s, s, p, p, d, d, ceil);
}

void bind_pool(py::module_& m) {
  // relu: and the ReLU after it (Sequential runs a ReLU before a pool after it), in one call
  m.def("max_pool2d", &max_fwd<false>, py::arg("x"), CK_MAX, py::arg("return_indices") = false,
        py::arg("relu") = false);
  m.def("max_pool2d_backward", &max_bwd<false>, py::arg("grad_out"), py::arg("x"), CK_MAX);
  m.def("pool2d_force", [](const std::string& name) { pool2d_force(name); }, py::arg("name"));
  m.def("avg_pool2d", &avg_fwd<false>, py::arg("x"), CK_AVG);
  m.def("avg_pool2d_backward", &avg_bwd<false>, py::arg("grad_out"), py::arg("x"), CK_AVG);
  // references (single-threaded, float64 accumulation) for the tests
  m.def("ref_max_pool2d", &max_fwd<true>, py::arg("x"), CK_MAX, py::arg("return_indices") = false,
        py::arg("relu") = false);
  m.def("ref_max_pool2d_backward", &max_bwd<true>, py::arg("grad_out"), py::arg("x"), CK_MAX);
  m.def("ref_avg_pool2d", &avg_fwd<true>, py::arg("x"), CK_AVG);
  m.def("ref_avg_pool2d_backward", &avg_bwd<true>, py::arg("grad_out"), py::arg("x"), CK_AVG);

  m.def("adaptive_avg_pool2d", [](py::handle xo, int64_t P, int64_t Q) {
    const char* fn = "adaptive_avg_pool2d";
    FArr x = to_float(xo, fn, "input");
    check_adaptive(fn, x, P, Q);
    const int64_t planes = x.shape(0) * x.shape(1), H = x.shape(2), W = x.shape(3);
    FArr y = empty({x.shape(0), x.shape(1), P, Q});
    float* yp = y.mutable_data();
    const float* xp = x.data();
    {
      py::gil_scoped_release nogil;
      adaptive_avg_pool2d_forward(yp, xp, planes, H, W, P, Q);
    }
    return y;
  }, py::arg("x"), py::arg("P"), py::arg("Q"));
  m.def("adaptive_avg_pool2d_backward", [](py::handle dyo, py::handle xo, int64_t P, int64_t Q) {
    return adaptive_bwd("adaptive_avg_pool2d_backward", dyo, xo, P, Q, false);
  }, py::arg("grad_out"), py::arg("x"), py::arg("P"), py::arg("Q"));
  m.def("adaptive_max_pool2d", [](py::handle xo, int64_t P, int64_t Q, bool return_indices)
            -> py::object {
    const char* fn = "adaptive_max_pool2d";
    FArr x = to_float(xo, fn, "input");
    check_adaptive(fn, x, P, Q);
    const int64_t planes = x.shape(0) * x.shape(1), H = x.shape(2), W = x.shape(3);
    FArr y = empty({x.shape(0), x.shape(1), P, Q});
    IArr idx;
    if (return_indices) idx = IArr(std::vector<py::ssize_t>{x.shape(0), x.shape(1), P, Q});
    float* yp = y.mutable_data();
    int64_t* ip = return_indices ? idx.mutable_data() : nullptr;
    const float* xp = x.data();
    {
      py::gil_scoped_release nogil;
      adaptive_max_pool2d_forward(yp, ip, xp, planes, H, W, P, Q);
    }
    if (return_indices) return py::make_tuple(y, idx);
    return std::move(y);
  }, py::arg("x"), py::arg("P"), py::arg("Q"), py::arg("return_indices") = false);
  m.def("adaptive_max_pool2d_backward", [](py::handle dyo, py::handle xo, int64_t P, int64_t Q) {
    return adaptive_bwd("adaptive_max_pool2d_backward", dyo, xo, P, Q, true);
  }, py::arg("grad_out"), py::arg("x"), py::arg("P"), py::arg("Q"));
  // max_unpool2d's placement for functional.max_unpool2d, which checks the arguments: x and idx
  // (N, C, H, W) -> (y (N, C, Ho, Wo), the flat position of the first index outside the plane
  // or -1)
  using FIn = py::array_t<float, py::array::c_style | py::array::forcecast>;
  using IIn = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
  m.def("max_unpool2d", [](FIn x, IIn idx, int64_t Ho, int64_t Wo) {
    if (x.ndim() != 4 || idx.ndim() != 4 || x.size() != idx.size())
      throw py::value_error("max_unpool2d: x and indices must be (N, C, H, W) of one shape");
    const int64_t planes = x.shape(0) * x.shape(1), in = x.shape(2) * x.shape(3);
    FArr y = empty({x.shape(0), x.shape(1), Ho, Wo});
    float* yp = y.mutable_data();
    const float* xp = x.data();
    const int64_t* ip = idx.data();
    int64_t bad;
    {
      py::gil_scoped_release nogil;
      bad = max_unpool2d_forward(yp, xp, ip, planes, in, Ho * Wo);
    }
    return py::make_tuple(y, bad);
  }, py::arg("x"), py::arg("indices"), py::arg("Ho"), py::arg("Wo"));
  m.def("max_unpool2d_backward", [](FIn g, IIn idx) {  // (dx, first bad position or -1)
    if (g.ndim() != 4 || idx.ndim() != 4 || g.shape(0) != idx.shape(0) ||
        g.shape(1) != idx.shape(1))
      throw py::value_error("max_unpool2d_backward: grad_out and indices must be (N, C, ., .)");
    const int64_t planes = idx.shape(0) * idx.shape(1), in = idx.shape(2) * idx.shape(3);
    FArr dx = empty({idx.shape(0), idx.shape(1), idx.shape(2), idx.shape(3)});
    float* dp = dx.mutable_data();
    const float* gp = g.data();
    const int64_t* ip = idx.data();
    int64_t bad;
    {
      py::gil_scoped_release nogil;
      bad = max_unpool2d_backward(dp, gp, ip, planes, in, g.shape(2) * g.shape(3));
    }
    return py::make_tuple(dx, bad);
  }, py::arg("grad_out"), py::arg("indices"));
}

}  // namespace bind
}  // namespace convkit
