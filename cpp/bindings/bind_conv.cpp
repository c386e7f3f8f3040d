// conv2d bindings: conv2d, conv2d_backward, and the reference versions used by the tests.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

struct ConvArgs {
  FArr x, w;
  py::object b;  // FArr or None
  Conv2dShape s;
};

ConvArgs check_conv(const char* fn, py::handle xo, py::handle wo, py::handle bo, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw) {
  ConvArgs a{to_float(xo, fn, "input"), to_float(wo, fn, "weight"), py::none(), {}};
  expect_ndim(a.x, 4, fn, "input", "(N, C, H, W)");
  expect_ndim(a.w, 4, fn, "weight", "(out_channels, in_channels, kH, kW)");
  Conv2dShape& s = a.s;
  s.N = a.x.shape(0); s.C = a.x.shape(1); s.H = a.x.shape(2); s.W = a.x.shape(3);
  s.K = a.w.shape(0); s.R = a.w.shape(2); s.S = a.w.shape(3);
  s.sh = sh; s.sw = sw; s.ph = ph; s.pw = pw;
  if (a.w.shape(1) != s.C)
    value_error(fn, "weight " + shape_str(a.w) + " expects " + std::to_string(a.w.shape(1)) +
                        " input channels, but input " + shape_str(a.x) + " has " +
                        std::to_string(s.C));
  if (s.R < 1 || s.S < 1)
    value_error(fn, "weight " + shape_str(a.w) + " must have a kernel of at least 1x1");
  if (sh < 1 || sw < 1)
    value_error(fn, "expected stride >= 1, but got (" + std::to_string(sh) + ", " +
                        std::to_string(sw) + ")");
  if (ph < 0 || pw < 0)
    value_error(fn, "expected padding >= 0, but got (" + std::to_string(ph) + ", " +
                        std::to_string(pw) + ")");
  if (ph > (int64_t(1) << 30) || pw > (int64_t(1) << 30) || sh > (int64_t(1) << 30) ||
      sw > (int64_t(1) << 30))
    value_error(fn, "stride and padding must be below 2^30, but got stride (" +
                        std::to_string(sh) + ", " + std::to_string(sw) + "), padding (" +
                        std::to_string(ph) + ", " + std::to_string(pw) + ")");
  if (s.H + 2 * ph < s.R || s.W + 2 * pw < s.S)
    value_error(fn, "kernel size (" + std::to_string(s.R) + ", " + std::to_string(s.S) +
                        ") is larger than the padded input (" + std::to_string(s.H + 2 * ph) +
                        ", " + std::to_string(s.W + 2 * pw) + ") of input " + shape_str(a.x) +
                        " with padding (" + std::to_string(ph) + ", " + std::to_string(pw) + ")");
  a.b = optional_bias(bo, s.K, a.w, fn);
  conv2d_out_size(s);
  checked_numel({s.N, s.K, s.P, s.Q}, fn, "output");
  checked_numel({s.C, s.R, s.S, s.P, s.Q}, fn, "im2col workspace");
  return a;
}

template <bool Ref>
FArr conv_fwd(py::handle x, py::handle w, py::handle b, int64_t sh, int64_t sw, int64_t ph,
              int64_t pw) {
  ConvArgs a = check_conv("conv2d", x, w, b, sh, sw, ph, pw);
  const Conv2dShape s = a.s;
  FArr y = empty({s.N, s.K, s.P, s.Q});
  float* yp = y.mutable_data();
  const float *xp = a.x.data(), *wp = a.w.data(), *bp = bias_ptr(a.b);
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::conv2d_forward(yp, xp, wp, bp, s);
    else conv2d_forward(yp, xp, wp, bp, s);
  }
  return y;
}

template <bool Ref>
py::tuple conv_bwd(py::handle dy, py::handle x, py::handle w, py::handle b, int64_t sh,
                   int64_t sw, int64_t ph, int64_t pw) {
  const char* fn = "conv2d_backward";
  ConvArgs a = check_conv(fn, x, w, b, sh, sw, ph, pw);
  const Conv2dShape s = a.s;
  FArr g = to_float(dy, fn, "grad_out");
  expect_shape(g, {s.N, s.K, s.P, s.Q}, fn, "grad_out");
  FArr dx = empty({s.N, s.C, s.H, s.W}), dw = empty({s.K, s.C, s.R, s.S});
  py::object db = py::none();
  float* dbp = nullptr;
  if (!a.b.is_none()) {
    FArr t = empty({s.K});
    dbp = t.mutable_data();
    db = t;
  }
  float *dxp = dx.mutable_data(), *dwp = dw.mutable_data();
  const float *gp = g.data(), *xp = a.x.data(), *wp = a.w.data();
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::conv2d_backward(dxp, dwp, dbp, gp, xp, wp, s);
    else conv2d_backward(dxp, dwp, dbp, gp, xp, wp, s);
  }
  return py::make_tuple(dx, dw, db);
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv2d", &conv_fwd<false>, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("conv2d_backward", &conv_bwd<false>, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"));
  m.def("ref_conv2d", &conv_fwd<true>);
  m.def("ref_conv2d_backward", &conv_bwd<true>);
}

}  // namespace bind
}  // namespace convkit
