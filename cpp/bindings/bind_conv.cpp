// conv2d bindings: conv2d, conv2d_backward, and the reference versions used by the tests.
#include <pybind11/stl.h>

#include <algorithm>

#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

struct ConvArgs {
  FArr x, w;
  py::object b;  // FArr or None
  Conv2dShape s;
};

std::string pair_str(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// Hyperparameters shared by conv2d and conv_transpose2d (ValueError naming the argument).
void check_hyper(const char* fn, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                 int64_t dw, int64_t groups) {
  const int64_t big = int64_t(1) << 30;
  if (sh < 1 || sw < 1) value_error(fn, "expected stride >= 1, but got " + pair_str(sh, sw));
  if (ph < 0 || pw < 0) value_error(fn, "expected padding >= 0, but got " + pair_str(ph, pw));
  if (dh < 1 || dw < 1) value_error(fn, "expected dilation >= 1, but got " + pair_str(dh, dw));
  if (groups < 1) value_error(fn, "expected groups >= 1, but got " + std::to_string(groups));
  if (ph > big || pw > big || sh > big || sw > big || dh > big || dw > big || groups > big)
    value_error(fn, "stride, padding, dilation and groups must be below 2^30, but got stride " +
                        pair_str(sh, sw) + ", padding " + pair_str(ph, pw) + ", dilation " +
                        pair_str(dh, dw) + ", groups " + std::to_string(groups));
}

// An empty plane (H or W zero) is an error, as PyTorch's: only the batch or the channels may be
// empty.
void expect_planes(const FArr& x, const char* fn) {
  if (x.shape(2) == 0 || x.shape(3) == 0)
    value_error(fn, "expected an input with non-zero height and width (only the batch or the "
                    "channels may be empty), but got input of shape " + shape_str(x));
}

// x (N, C, H, W) and w (K, C/groups, R, S) of a convolution; the shape with P and Q filled.
ConvArgs check_conv(const char* fn, py::handle xo, py::handle wo, py::handle bo, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  ConvArgs a{to_float(xo, fn, "input"), to_float(wo, fn, "weight"), py::none(), {}};
  expect_ndim(a.x, 4, fn, "input", "(N, C, H, W), or unbatched (C, H, W)");
  expect_ndim(a.w, 4, fn, "weight", "(out_channels, in_channels / groups, kH, kW)");
  expect_planes(a.x, fn);
  check_hyper(fn, sh, sw, ph, pw, dh, dw, groups);
  Conv2dShape& s = a.s;
  s.N = a.x.shape(0); s.C = a.x.shape(1); s.H = a.x.shape(2); s.W = a.x.shape(3);
  s.K = a.w.shape(0); s.R = a.w.shape(2); s.S = a.w.shape(3);
  s.sh = sh; s.sw = sw; s.ph = ph; s.pw = pw; s.dh = dh; s.dw = dw; s.G = groups;
  if (s.C % groups)
    value_error(fn, "expected input channels to be divisible by groups, but input " +
                        shape_str(a.x) + " has " + std::to_string(s.C) + " channels and groups=" +
                        std::to_string(groups));
  if (s.K % groups)
    value_error(fn, "expected weight " + shape_str(a.w) + " to have out_channels divisible by "
                    "groups=" + std::to_string(groups));
  if (a.w.shape(1) * groups != s.C) {
    std::string hint = groups == 1 ? "" : " (in_channels / groups = " +
                                              std::to_string(s.C / groups) + ")";
    std::string nhwc = (s.W == a.w.shape(1) * groups && s.C != s.W)
                           ? "; the input looks channels-last (N, H, W, C): convkit expects NCHW, "
                             "e.g. x.transpose(0, 3, 1, 2)"
                           : "";
    value_error(fn, "weight " + shape_str(a.w) + " expects " +
                        std::to_string(a.w.shape(1) * groups) + " input channels" + hint +
                        ", but input " + shape_str(a.x) + " has " + std::to_string(s.C) + nhwc);
  }
  if (s.R < 1 || s.S < 1)
    value_error(fn, "weight " + shape_str(a.w) + " must have a kernel of at least 1x1");
  const int64_t eh = dh * (s.R - 1) + 1, ew = dw * (s.S - 1) + 1;
  if (s.H + 2 * ph < eh || s.W + 2 * pw < ew)
    value_error(fn, "kernel size " + pair_str(s.R, s.S) +
                        (dh > 1 || dw > 1 ? " with dilation " + pair_str(dh, dw) + " spans " +
                                                pair_str(eh, ew) + " and" : "") +
                        " is larger than the padded input " +
                        pair_str(s.H + 2 * ph, s.W + 2 * pw) + " of input " + shape_str(a.x) +
                        " with padding " + pair_str(ph, pw));
  a.b = optional_bias(bo, s.K, a.w, fn);
  conv2d_out_size(s);
  checked_numel({s.N, s.K, s.P, s.Q}, fn, "output");
  checked_numel({s.C, s.R, s.S, s.P, s.Q}, fn, "im2col workspace");
  return a;
}

template <bool Ref>
FArr conv_fwd(py::handle x, py::handle w, py::handle b, int64_t sh, int64_t sw, int64_t ph,
              int64_t pw, int64_t dh, int64_t dw, int64_t groups, bool relu) {
  ConvArgs a = check_conv("conv2d", x, w, b, sh, sw, ph, pw, dh, dw, groups);
  const Conv2dShape s = a.s;
  FArr y = empty({s.N, s.K, s.P, s.Q});
  float* yp = y.mutable_data();
  const float *xp = a.x.data(), *wp = a.w.data(), *bp = bias_ptr(a.b);
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::conv2d_forward(yp, xp, wp, bp, s);
    else conv2d_forward(yp, xp, wp, bp, s);
  }
  if (relu) relu_in_place(y);
  return y;
}

// The outputs of a backward: grad_x (None unless wanted), grad_weight, grad_bias (None without a
// bias), with pointers for the C++ op (null for None).
struct Grads {
  py::object dx = py::none(), db = py::none();
  FArr dw;
  float *dxp = nullptr, *dwp = nullptr, *dbp = nullptr;
  Grads(bool want_dx, const std::vector<int64_t>& xshape, const std::vector<int64_t>& wshape,
        bool bias, int64_t nbias)
      : dw(empty(wshape)) {
    dwp = dw.mutable_data();
    if (want_dx) {
      FArr t = empty(xshape);
      dxp = t.mutable_data();
      dx = t;
    }
    if (bias) {
      FArr t = empty({nbias});
      dbp = t.mutable_data();
      db = t;
    }
  }
  py::tuple result() const { return py::make_tuple(dx, dw, db); }
};

template <bool Ref>
py::tuple conv_bwd(py::handle dy, py::handle x, py::handle w, py::handle b, int64_t sh,
                   int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                   bool input_grad) {
  const char* fn = "conv2d_backward";
  ConvArgs a = check_conv(fn, x, w, b, sh, sw, ph, pw, dh, dw, groups);
  const Conv2dShape s = a.s;
  FArr g = to_float(dy, fn, "grad_out");
  expect_shape(g, {s.N, s.K, s.P, s.Q}, fn, "grad_out");
  Grads r(input_grad, {s.N, s.C, s.H, s.W}, {s.K, s.C / s.G, s.R, s.S}, !a.b.is_none(), s.K);
  const float *gp = g.data(), *xp = a.x.data(), *wp = a.w.data();
  {
    py::gil_scoped_release nogil;
    if (Ref) ref::conv2d_backward(r.dxp, r.dwp, r.dbp, gp, xp, wp, s);
    else conv2d_backward(r.dxp, r.dwp, r.dbp, gp, xp, wp, s);
  }
  return r.result();
}

// conv_transpose2d: x (N, C_in, H, W), w (C_in, C_out/groups, R, S). It is the input gradient of
// the convolution from (N, C_out, Ho, Wo) to (N, C_in, H, W), whose shape is returned.
ConvArgs check_convT(const char* fn, py::handle xo, py::handle wo, py::handle bo, int64_t sh,
                     int64_t sw, int64_t ph, int64_t pw, int64_t oph, int64_t opw, int64_t dh,
                     int64_t dw, int64_t groups) {
  ConvArgs a{to_float(xo, fn, "input"), to_float(wo, fn, "weight"), py::none(), {}};
  expect_ndim(a.x, 4, fn, "input", "(N, C_in, H, W), or unbatched (C_in, H, W)");
  expect_ndim(a.w, 4, fn, "weight", "(in_channels, out_channels / groups, kH, kW)");
  expect_planes(a.x, fn);
  check_hyper(fn, sh, sw, ph, pw, dh, dw, groups);
  if (oph < 0 || opw < 0 || (oph >= sh && oph >= dh) || (opw >= sw && opw >= dw))
    value_error(fn, "expected output_padding >= 0 and smaller than either stride or dilation, "
                    "but got output_padding " + pair_str(oph, opw) + ", stride " +
                    pair_str(sh, sw) + ", dilation " + pair_str(dh, dw));
  Conv2dShape& s = a.s;
  const int64_t Cin = a.x.shape(1);
  if (a.w.shape(0) != Cin)
    value_error(fn, "weight " + shape_str(a.w) + " expects " + std::to_string(a.w.shape(0)) +
                        " input channels, but input " + shape_str(a.x) + " has " +
                        std::to_string(Cin));
  if (Cin % groups)
    value_error(fn, "expected input channels to be divisible by groups, but input " +
                        shape_str(a.x) + " has " + std::to_string(Cin) + " channels and groups=" +
                        std::to_string(groups));
  s.N = a.x.shape(0); s.K = Cin; s.P = a.x.shape(2); s.Q = a.x.shape(3);
  s.C = a.w.shape(1) * groups; s.R = a.w.shape(2); s.S = a.w.shape(3);
  s.sh = sh; s.sw = sw; s.ph = ph; s.pw = pw; s.dh = dh; s.dw = dw; s.G = groups;
  if (s.R < 1 || s.S < 1)
    value_error(fn, "weight " + shape_str(a.w) + " must have a kernel of at least 1x1");
  s.H = (s.P - 1) * sh - 2 * ph + dh * (s.R - 1) + oph + 1;
  s.W = (s.Q - 1) * sw - 2 * pw + dw * (s.S - 1) + opw + 1;
  if (s.H < 1 || s.W < 1)  // (PyTorch: "Output size is too small")
    value_error(fn, "input " + shape_str(a.x) + " with stride " + pair_str(sh, sw) +
                        ", padding " + pair_str(ph, pw) + ", dilation " + pair_str(dh, dw) +
                        " and kernel " + pair_str(s.R, s.S) + " gives an output of size " +
                        pair_str(s.H, s.W) + ": it must be at least 1x1 (use less padding)");
  a.b = optional_bias(bo, s.C, a.w, fn);
  checked_numel({s.N, s.C, s.H, s.W}, fn, "output");
  checked_numel({s.C, s.R, s.S, s.P, s.Q}, fn, "im2col workspace");
  return a;
}

FArr convT_fwd(py::handle x, py::handle w, py::handle b, int64_t sh, int64_t sw, int64_t ph,
               int64_t pw, int64_t oph, int64_t opw, int64_t dh, int64_t dw, int64_t groups) {
  ConvArgs a = check_convT("conv_transpose2d", x, w, b, sh, sw, ph, pw, oph, opw, dh, dw, groups);
  const Conv2dShape s = a.s;
  FArr y = empty({s.N, s.C, s.H, s.W});
  float* yp = y.mutable_data();
  const float *xp = a.x.data(), *wp = a.w.data(), *bp = bias_ptr(a.b);
  {
    py::gil_scoped_release nogil;
    conv_transpose2d_forward(yp, xp, wp, bp, s);
  }
  return y;
}

py::tuple convT_bwd(py::handle dy, py::handle x, py::handle w, py::handle b, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t oph, int64_t opw, int64_t dh,
                    int64_t dw, int64_t groups, bool input_grad) {
  const char* fn = "conv_transpose2d_backward";
  ConvArgs a = check_convT(fn, x, w, b, sh, sw, ph, pw, oph, opw, dh, dw, groups);
  const Conv2dShape s = a.s;
  FArr g = to_float(dy, fn, "grad_out");
  expect_shape(g, {s.N, s.C, s.H, s.W}, fn, "grad_out");
  Grads r(input_grad, {s.N, s.K, s.P, s.Q}, {s.K, s.C / s.G, s.R, s.S}, !a.b.is_none(), s.C);
  const float *gp = g.data(), *xp = a.x.data(), *wp = a.w.data();
  {
    py::gil_scoped_release nogil;
    conv_transpose2d_backward(r.dxp, r.dwp, r.dbp, gp, xp, wp, s);
  }
  return r.result();
}

// Explicit padding of (N, C, H, W) by (top, bottom, left, right) in one of PyTorch's modes:
// 0 zeros, 1 reflect, 2 replicate, 3 circular.
int pad_mode(const std::string& mode, const char* fn) {
  if (mode == "zeros" || mode == "constant") return 0;
  if (mode == "reflect") return 1;
  if (mode == "replicate") return 2;
  if (mode == "circular") return 3;
  value_error(fn, "expected padding_mode to be 'zeros', 'reflect', 'replicate' or 'circular', "
                  "but got '" + mode + "'");
}

void check_pad(const char* fn, const std::vector<int64_t>& xs, int64_t t, int64_t b, int64_t l,
               int64_t r, int mode, const std::string& mname) {
  if (t < 0 || b < 0 || l < 0 || r < 0 || t > (1 << 30) || b > (1 << 30) || l > (1 << 30) ||
      r > (1 << 30))
    value_error(fn, "expected padding in [0, 2^30), but got (top, bottom, left, right) = (" +
                        std::to_string(t) + ", " + std::to_string(b) + ", " + std::to_string(l) +
                        ", " + std::to_string(r) + ")");
  const int64_t H = xs[2], W = xs[3];
  if (mode == 1 && (t >= H || b >= H || l >= W || r >= W))
    value_error(fn, "padding_mode='reflect' needs padding smaller than the input size, but got "
                    "padding (" + std::to_string(std::max(t, b)) + ", " +
                    std::to_string(std::max(l, r)) + ") for input " + shape_str(xs));
  if ((mode == 2 || mode == 3) && (H == 0 || W == 0) && (t || b || l || r))
    value_error(fn, "padding_mode='" + mname + "' cannot pad an empty input " + shape_str(xs));
  if (mode == 3 && (t > H || b > H || l > W || r > W))
    value_error(fn, "padding_mode='circular' needs padding at most the input size, but got "
                    "padding (" + std::to_string(std::max(t, b)) + ", " +
                    std::to_string(std::max(l, r)) + ") for input " + shape_str(xs));
}

FArr pad_fwd(py::handle xo, int64_t t, int64_t b, int64_t l, int64_t r, const std::string& m) {
  const char* fn = "pad2d";
  const int mode = pad_mode(m, fn);
  FArr x = to_float(xo, fn, "input");
  expect_ndim(x, 4, fn, "input", "(N, C, H, W)");
  const auto xs = shape_of(x);
  check_pad(fn, xs, t, b, l, r, mode, m);
  const int64_t Ho = xs[2] + t + b, Wo = xs[3] + l + r;  // pads are below 2^30
  checked_numel({xs[0], xs[1], Ho, Wo}, fn, "output");
  FArr y = empty({xs[0], xs[1], Ho, Wo});
  float* yp = y.mutable_data();
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    pad2d_forward(yp, xp, xs[0] * xs[1], xs[2], xs[3], t, b, l, r, mode);
  }
  return y;
}

FArr pad_bwd(py::handle go, int64_t H, int64_t W, int64_t t, int64_t b, int64_t l, int64_t r,
             const std::string& m) {
  const char* fn = "pad2d_backward";
  const int mode = pad_mode(m, fn);
  FArr g = to_float(go, fn, "grad_out");
  expect_ndim(g, 4, fn, "grad_out", "(N, C, H, W)");
  const auto gs = shape_of(g);
  std::vector<int64_t> xs{gs[0], gs[1], H, W};
  check_pad(fn, xs, t, b, l, r, mode, m);
  expect_shape(g, {gs[0], gs[1], H + t + b, W + l + r}, fn, "grad_out");
  FArr dx = empty(xs);
  float* dp = dx.mutable_data();
  const float* gp = g.data();
  {
    py::gil_scoped_release nogil;
    pad2d_backward(dp, gp, gs[0] * gs[1], H, W, t, b, l, r, mode);
  }
  return dx;
}

// interpolate's taps (from Python), checked: lengths Ho / Wo, indices inside the plane.
using IArr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
struct ResizeArgs {
  IArr h0, h1, w0, w1;
  FArr a0, a1, b0, b1;
  Resize2dTaps taps(bool nearest) const {
    return {h0.data(), h1.data(), w0.data(), w1.data(), a0.data(), a1.data(), b0.data(),
            b1.data(), nearest};
  }
};

ResizeArgs resize_args(const char* fn, int64_t H, int64_t W, py::handle h0, py::handle h1,
                       py::handle a0, py::handle a1, py::handle w0, py::handle w1, py::handle b0,
                       py::handle b1) {
  ResizeArgs r{IArr::ensure(h0), IArr::ensure(h1), IArr::ensure(w0), IArr::ensure(w1),
               to_float(a0, fn, "a0"), to_float(a1, fn, "a1"), to_float(b0, fn, "b0"),
               to_float(b1, fn, "b1")};
  if (!r.h0 || !r.h1 || !r.w0 || !r.w1) throw py::error_already_set();
  const int64_t Ho = r.h0.size(), Wo = r.w0.size();
  if (r.h1.size() != Ho || r.a0.size() != Ho || r.a1.size() != Ho || r.w1.size() != Wo ||
      r.b0.size() != Wo || r.b1.size() != Wo)
    value_error(fn, "expected the row taps (h0, h1, a0, a1) of one length and the column taps "
                    "(w0, w1, b0, b1) of another");
  auto inside = [](const IArr& a, int64_t n) {
    const int64_t* p = a.data();
    return std::all_of(p, p + a.size(), [n](int64_t v) { return v >= 0 && v < n; });
  };
  if (!inside(r.h0, H) || !inside(r.h1, H) || !inside(r.w0, W) || !inside(r.w1, W))
    value_error(fn, "a tap index lies outside the " + std::to_string(H) + " x " +
                        std::to_string(W) + " plane");
  return r;
}

FArr resize_fwd(py::handle xo, py::handle h0, py::handle h1, py::handle a0, py::handle a1,
                py::handle w0, py::handle w1, py::handle b0, py::handle b1, bool nearest) {
  const char* fn = "resize2d";
  FArr x = to_float(xo, fn, "input");
  expect_ndim(x, 4, fn, "input", "(N, C, H, W)");
  const auto xs = shape_of(x);
  const ResizeArgs r = resize_args(fn, xs[2], xs[3], h0, h1, a0, a1, w0, w1, b0, b1);
  const int64_t Ho = r.h0.size(), Wo = r.w0.size();
  checked_numel({xs[0], xs[1], Ho, Wo}, fn, "output");
  FArr y = empty({xs[0], xs[1], Ho, Wo});
  float* yp = y.mutable_data();
  const float* xp = x.data();
  const Resize2dTaps t = r.taps(nearest);
  {
    py::gil_scoped_release nogil;
    resize2d_forward(yp, xp, xs[0] * xs[1], xs[2], xs[3], Ho, Wo, t);
  }
  return y;
}

FArr resize_bwd(py::handle go, int64_t H, int64_t W, py::handle h0, py::handle h1, py::handle a0,
                py::handle a1, py::handle w0, py::handle w1, py::handle b0, py::handle b1,
                bool nearest) {
  const char* fn = "resize2d_backward";
  FArr g = to_float(go, fn, "grad_out");
  expect_ndim(g, 4, fn, "grad_out", "(N, C, Ho, Wo)");
  const auto gs = shape_of(g);
  const ResizeArgs r = resize_args(fn, H, W, h0, h1, a0, a1, w0, w1, b0, b1);
  expect_shape(g, {gs[0], gs[1], static_cast<int64_t>(r.h0.size()),
                   static_cast<int64_t>(r.w0.size())}, fn, "grad_out");
  FArr dx = empty({gs[0], gs[1], H, W});
  float* dp = dx.mutable_data();
  const float* gp = g.data();
  const Resize2dTaps t = r.taps(nearest);
  {
    py::gil_scoped_release nogil;
    resize2d_backward(dp, gp, gs[0] * gs[1], H, W, gs[2], gs[3], t);
  }
  return dx;
}

ConvDir dir_of(const std::string& d) {
  if (d == "forward") return ConvDir::forward;
  if (d == "input_grad") return ConvDir::input_grad;
  if (d == "weight_grad") return ConvDir::weight_grad;
  value_error("conv2d_force", "expected direction 'forward', 'input_grad' or 'weight_grad', "
                              "but got '" + d + "'");
}

Conv2dShape plan_shape(py::tuple xs, py::tuple ws, int64_t sh, int64_t sw, int64_t ph,
                       int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  if (xs.size() != 4 || ws.size() != 4)
    value_error("conv2d_plan", "expected input and weight shapes of 4 sizes each");
  Conv2dShape s{xs[0].cast<int64_t>(), xs[1].cast<int64_t>(), xs[2].cast<int64_t>(),
                xs[3].cast<int64_t>(), ws[0].cast<int64_t>(), ws[2].cast<int64_t>(),
                ws[3].cast<int64_t>(), sh, sw, ph, pw, 0, 0, dh, dw, groups};
  check_hyper("conv2d_plan", sh, sw, ph, pw, dh, dw, groups);
  conv2d_out_size(s);
  return s;
}

}  // namespace

FArr conv2d_call(py::handle x, py::handle w, py::handle b, int64_t sh, int64_t sw, int64_t ph,
                 int64_t pw, int64_t dh, int64_t dw, int64_t groups, bool relu) {
  return conv_fwd<false>(x, w, b, sh, sw, ph, pw, dh, dw, groups, relu);
}

py::tuple conv2d_backward_call(py::handle dy, py::handle x, py::handle w, py::handle b,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                               int64_t dw, int64_t groups, bool input_grad) {
  return conv_bwd<false>(dy, x, w, b, sh, sw, ph, pw, dh, dw, groups, input_grad);
}

py::object conv2d_weight_grad_maxpool2x2_call(py::handle g, py::handle y, py::handle x,
                                              py::handle w, py::handle b, int64_t ph,
                                              int64_t pw) {
  const char* fn = "conv2d_weight_grad_maxpool2x2";
  ConvArgs a = check_conv(fn, x, w, b, 1, 1, ph, pw, 1, 1, 1);
  const Conv2dShape s = a.s;
  FArr yf = to_float(y, fn, "y");
  expect_shape(yf, {s.N, s.K, s.P, s.Q}, fn, "y");
  FArr gf = to_float(g, fn, "grad_out");
  expect_shape(gf, {s.N, s.K, s.P / 2, s.Q / 2}, fn, "grad_out");
  Grads r(false, {}, {s.K, s.C, s.R, s.S}, !a.b.is_none(), s.K);
  const float *gp = gf.data(), *yp = yf.data(), *xp = a.x.data();
  bool done;
  {
    py::gil_scoped_release nogil;
    done = conv2d_weight_grad_maxpool2x2(r.dwp, r.dbp, gp, yp, xp, s);
  }
  if (!done) return py::none();
  return py::make_tuple(r.dw, r.db);
}

// conv2d then an evaluation-mode batch_norm (its running statistics, weight and bias, each K
// values or None for the last two), its add and relu: nn.Sequential's Conv2d -> BatchNorm2d in
// eval mode
FArr conv_bn_fwd(py::handle x, py::handle w, py::handle b, int64_t sh, int64_t sw, int64_t ph,
                 int64_t pw, int64_t dh, int64_t dw, int64_t groups, py::handle rm,
                 py::handle rv, py::handle bnw, py::handle bnb, double eps, bool relu,
                 py::handle addo) {
  // errors name the op whose argument is wrong
  ConvArgs a = check_conv("conv2d", x, w, b, sh, sw, ph, pw, dh, dw, groups);
  const char* fn = "batch_norm";
  const Conv2dShape s = a.s;
  const std::vector<double> mean = per_channel_f64(rm, s.K, fn, "running_mean"),
                            var = per_channel_f64(rv, s.K, fn, "running_var");
  auto per_channel = [&](py::handle h, const char* name) {
    FArr v = to_float(h, fn, name);
    expect_shape(v, {s.K}, fn, name);
    return v;
  };
  FArr bw, bb, add;
  if (!bnw.is_none()) bw = per_channel(bnw, "bn_weight");
  if (!bnb.is_none()) bb = per_channel(bnb, "bn_bias");
  if (!addo.is_none()) {
    add = to_float(addo, fn, "add");
    expect_shape(add, {s.N, s.K, s.P, s.Q}, fn, "add");
  }
  FArr y = empty({s.N, s.K, s.P, s.Q});
  float* yp = y.mutable_data();
  const float *xp = a.x.data(), *wp = a.w.data(), *bp = bias_ptr(a.b);
  const float* bwp = bnw.is_none() ? nullptr : bw.data();
  const float* bbp = bnb.is_none() ? nullptr : bb.data();
  const float* ap = addo.is_none() ? nullptr : add.data();
  {
    py::gil_scoped_release nogil;
    conv2d_bn_forward(yp, xp, wp, bp, s, mean.data(), var.data(), bwp, bbp, eps, relu, ap);
  }
  return y;
}

void bind_conv(py::module_& m) {
  m.def("conv2d_bn", &conv_bn_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"),
        py::arg("dw"), py::arg("groups"), py::arg("running_mean"), py::arg("running_var"),
        py::arg("bn_weight"), py::arg("bn_bias"), py::arg("eps"), py::arg("relu") = false,
        py::arg("add") = py::none());
  // relu: and the ReLU after it, in the same call (Sequential's Conv2d -> ReLU)
  m.def("conv2d", &conv_fwd<false>, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh") = 1,
        py::arg("dw") = 1, py::arg("groups") = 1, py::arg("relu") = false);
  m.def("conv2d_backward", &conv_bwd<false>, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"), py::arg("dh") = 1, py::arg("dw") = 1, py::arg("groups") = 1,
        py::arg("input_grad") = true);
  m.def("conv2d_weight_grad_maxpool2x2", &conv2d_weight_grad_maxpool2x2_call,
        py::arg("grad_out"), py::arg("y"), py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("ph"), py::arg("pw"),
        "(dw, db) of a stride-1 conv2d whose output y went through a 2x2 / stride-2 max pool, "
        "from the pool's gradient; None where it declines (an Inf or NaN in x, kernels wider "
        "than 8). Sequential's backward runs it for a first Conv2d followed by a MaxPool2d(2).");
  m.def("ref_conv2d", &conv_fwd<true>, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh") = 1,
        py::arg("dw") = 1, py::arg("groups") = 1, py::arg("relu") = false);
  m.def("ref_conv2d_backward", &conv_bwd<true>, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"), py::arg("dh") = 1, py::arg("dw") = 1, py::arg("groups") = 1,
        py::arg("input_grad") = true);
  m.def("conv_transpose2d", &convT_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("oph"),
        py::arg("opw"), py::arg("dh"), py::arg("dw"), py::arg("groups"));
  m.def("conv_transpose2d_backward", &convT_bwd, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"), py::arg("oph"), py::arg("opw"), py::arg("dh"), py::arg("dw"),
        py::arg("groups"), py::arg("input_grad") = true);
  m.def("pad2d", &pad_fwd, py::arg("x"), py::arg("top"), py::arg("bottom"), py::arg("left"),
        py::arg("right"), py::arg("mode"));
  m.def("pad2d_backward", &pad_bwd, py::arg("grad_out"), py::arg("H"), py::arg("W"),
        py::arg("top"), py::arg("bottom"), py::arg("left"), py::arg("right"), py::arg("mode"));
  // interpolate's arithmetic: the taps come from functional._interp_plan
  m.def("resize2d", &resize_fwd, py::arg("x"), py::arg("h0"), py::arg("h1"), py::arg("a0"),
        py::arg("a1"), py::arg("w0"), py::arg("w1"), py::arg("b0"), py::arg("b1"),
        py::arg("nearest"));
  m.def("resize2d_backward", &resize_bwd, py::arg("grad_out"), py::arg("H"), py::arg("W"),
        py::arg("h0"), py::arg("h1"), py::arg("a0"), py::arg("a1"), py::arg("w0"), py::arg("w1"),
        py::arg("b0"), py::arg("b1"), py::arg("nearest"));
  // The algorithm tables: names, the plan for a shape, applicability, and a forcing hook for
  // tests and benchmarks.
  m.def("conv2d_algorithms", [](const std::string& d) { return conv2d_algorithms(dir_of(d)); },
        py::arg("direction"));
  m.def("conv2d_plan",
        [](py::tuple xs, py::tuple ws, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
           int64_t dw, int64_t groups) {
          const Conv2dShape s = plan_shape(xs, ws, sh, sw, ph, pw, dh, dw, groups);
          py::dict d;
          d["forward"] = conv2d_plan(s, ConvDir::forward);
          d["input_grad"] = conv2d_plan(s, ConvDir::input_grad);
          d["weight_grad"] = conv2d_plan(s, ConvDir::weight_grad);
          return d;
        },
        py::arg("x_shape"), py::arg("w_shape"), py::arg("sh") = 1, py::arg("sw") = 1,
        py::arg("ph") = 0, py::arg("pw") = 0, py::arg("dh") = 1, py::arg("dw") = 1,
        py::arg("groups") = 1);
  m.def("conv2d_applies",
        [](const std::string& d, const std::string& name, py::tuple xs, py::tuple ws, int64_t sh,
           int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
          return conv2d_applies(plan_shape(xs, ws, sh, sw, ph, pw, dh, dw, groups), dir_of(d),
                                name);
        },
        py::arg("direction"), py::arg("name"), py::arg("x_shape"), py::arg("w_shape"),
        py::arg("sh") = 1, py::arg("sw") = 1, py::arg("ph") = 0, py::arg("pw") = 0,
        py::arg("dh") = 1, py::arg("dw") = 1, py::arg("groups") = 1);
  m.def("conv2d_force",
        [](const std::string& d, const std::string& name) { conv2d_force(dir_of(d), name); },
        py::arg("direction"), py::arg("name"));
}

}  // namespace bind
}  // namespace convkit
