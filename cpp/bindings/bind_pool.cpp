// Pooling bindings: max_pool2d / avg_pool2d, their backward, and the references.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

Pool2dShape check_pool(const char* fn, const FArr& x, int64_t kh, int64_t kw, int64_t sh,
                       int64_t sw, int64_t ph, int64_t pw) {
  expect_ndim(x, 4, fn, "input", "(N, C, H, W)");
  Pool2dShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, sh, sw, ph, pw, 0, 0};
  const std::string k = "(" + std::to_string(kh) + ", " + std::to_string(kw) + ")";
  if (kh < 1 || kw < 1) value_error(fn, "expected kernel_size >= 1, but got " + k);
  if (sh < 1 || sw < 1)
    value_error(fn, "expected stride >= 1, but got (" + std::to_string(sh) + ", " +
                        std::to_string(sw) + ")");
  if (ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw)
    value_error(fn, "expected padding between 0 and half the kernel size " + k + ", but got (" +
                        std::to_string(ph) + ", " + std::to_string(pw) + ")");
  if (kh > (int64_t(1) << 30) || kw > (int64_t(1) << 30) || sh > (int64_t(1) << 30) ||
      sw > (int64_t(1) << 30))
    value_error(fn, "kernel_size and stride must be below 2^30");
  if (s.H + 2 * ph < kh || s.W + 2 * pw < kw)
    value_error(fn, "kernel_size " + k + " is larger than the padded input (" +
                        std::to_string(s.H + 2 * ph) + ", " + std::to_string(s.W + 2 * pw) +
                        ") of input " + shape_str(x));
  pool2d_out_size(s);
  checked_numel({s.N, s.C, s.P, s.Q}, fn, "output");
  return s;
}

using PoolFwd = void (*)(float*, const float*, const Pool2dShape&);

template <PoolFwd F>
FArr pool_fwd(const char* fn, py::handle xo, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
              int64_t ph, int64_t pw) {
  FArr x = to_float(xo, fn, "input");
  const Pool2dShape s = check_pool(fn, x, kh, kw, sh, sw, ph, pw);
  FArr y = empty({s.N, s.C, s.P, s.Q});
  float* yp = y.mutable_data();
  const float* xp = x.data();
  {
    py::gil_scoped_release nogil;
    F(yp, xp, s);
  }
  return y;
}

// dx from dy; `x` is needed by max (argmax), unused by avg
template <class F>
FArr pool_bwd(const char* fn, py::handle dyo, py::handle xo, int64_t kh, int64_t kw, int64_t sh,
              int64_t sw, int64_t ph, int64_t pw, F&& f) {
  FArr x = to_float(xo, fn, "input");
  const Pool2dShape s = check_pool(fn, x, kh, kw, sh, sw, ph, pw);
  FArr dy = to_float(dyo, fn, "grad_out");
  expect_shape(dy, {s.N, s.C, s.P, s.Q}, fn, "grad_out");
  FArr dx = empty({s.N, s.C, s.H, s.W});
  float* dxp = dx.mutable_data();
  const float *dyp = dy.data(), *xp = x.data();
  {
    py::gil_scoped_release nogil;
    f(dxp, dyp, xp, s);
  }
  return dx;
}

#define CK_POOL_ARGS py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw")

}  // namespace

void bind_pool(py::module_& m) {
  m.def("max_pool2d", [](py::handle x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                         int64_t pw) {
    return pool_fwd<max_pool2d_forward>("max_pool2d", x, kh, kw, sh, sw, ph, pw);
  }, py::arg("x"), CK_POOL_ARGS);
  m.def("avg_pool2d", [](py::handle x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                         int64_t pw) {
    return pool_fwd<avg_pool2d_forward>("avg_pool2d", x, kh, kw, sh, sw, ph, pw);
  }, py::arg("x"), CK_POOL_ARGS);
  m.def("max_pool2d_backward", [](py::handle dy, py::handle x, int64_t kh, int64_t kw, int64_t sh,
                                  int64_t sw, int64_t ph, int64_t pw) {
    return pool_bwd("max_pool2d_backward", dy, x, kh, kw, sh, sw, ph, pw,
                    [](float* dx, const float* g, const float* xp, const Pool2dShape& s) {
                      max_pool2d_backward(dx, g, xp, s);
                    });
  }, py::arg("grad_out"), py::arg("x"), CK_POOL_ARGS);
  m.def("avg_pool2d_backward", [](py::handle dy, py::handle x, int64_t kh, int64_t kw, int64_t sh,
                                  int64_t sw, int64_t ph, int64_t pw) {
    return pool_bwd("avg_pool2d_backward", dy, x, kh, kw, sh, sw, ph, pw,
                    [](float* dx, const float* g, const float*, const Pool2dShape& s) {
                      avg_pool2d_backward(dx, g, s);
                    });
  }, py::arg("grad_out"), py::arg("x"), CK_POOL_ARGS);

  // references (single-threaded, float64 accumulation) for the tests
  m.def("ref_max_pool2d", [](py::handle x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw) {
    return pool_fwd<ref::max_pool2d_forward>("max_pool2d", x, kh, kw, sh, sw, ph, pw);
  });
  m.def("ref_avg_pool2d", [](py::handle x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw) {
    return pool_fwd<ref::avg_pool2d_forward>("avg_pool2d", x, kh, kw, sh, sw, ph, pw);
  });
  m.def("ref_max_pool2d_backward", [](py::handle dy, py::handle x, int64_t kh, int64_t kw,
                                      int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    return pool_bwd("max_pool2d_backward", dy, x, kh, kw, sh, sw, ph, pw,
                    [](float* dx, const float* g, const float* xp, const Pool2dShape& s) {
                      ref::max_pool2d_backward(dx, g, xp, s);
                    });
  });
  m.def("ref_avg_pool2d_backward", [](py::handle dy, py::handle x, int64_t kh, int64_t kw,
                                      int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    return pool_bwd("avg_pool2d_backward", dy, x, kh, kw, sh, sw, ph, pw,
                    [](float* dx, const float* g, const float*, const Pool2dShape& s) {
                      ref::avg_pool2d_backward(dx, g, s);
                    });
  });
}

}  // namespace bind
}  // namespace convkit
