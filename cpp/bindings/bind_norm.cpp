// Batch-norm bindings: x (N, C, ...) normalised per channel C.
#include <cmath>

#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

struct BnArgs {
  FArr x;
  int64_t N, C, L;
  py::object weight, bias;  // FArr or None
};

BnArgs check_bn(const char* fn, py::handle xo, py::handle wo, py::handle bo, bool training) {
  BnArgs a{to_float(xo, fn, "input"), 0, 0, 1, py::none(), py::none()};
  if (a.x.ndim() < 2)
    value_error(fn, "expected input of shape (N, C) or (N, C, H, W), but got " + shape_str(a.x));
  a.N = a.x.shape(0);
  a.C = a.x.shape(1);
  for (py::ssize_t i = 2; i < a.x.ndim(); ++i) a.L *= a.x.shape(i);
  if (training && a.N * a.L <= 1 && a.N * a.C * a.L > 0)
    value_error(fn, "Expected more than 1 value per channel when training, but got input of "
                    "shape " + shape_str(a.x));
  for (auto [h, name, out] : {std::tuple{wo, "weight", &a.weight}, {bo, "bias", &a.bias}}) {
    if (h.is_none()) continue;
    FArr v = to_float(h, fn, name);
    expect_shape(v, {a.C}, fn, name);
    *out = v;
  }
  return a;
}

const float* ptr(const py::object& o) { return o.is_none() ? nullptr : o.cast<FArr>().data(); }

// A running-statistics array the training forward updates in place: a writable C-contiguous
// float32 array of shape (C,) the caller owns, checked before any work is done.
float* updatable(const char* fn, py::handle h, const char* name, int64_t C) {
  if (!py::isinstance<py::array>(h))
    value_error(fn, std::string("argument '") + name + "' must be a float32 NumPy array to be "
                    "updated in place, but got " + std::string(py::str(py::type::of(h))));
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
      !a.writeable() || a.ndim() != 1 || a.shape(0) != C)
    value_error(fn, std::string("argument '") + name + "' must be a writable C-contiguous "
                    "float32 array of shape (" + std::to_string(C) + ",) to be updated in "
                    "place, but got dtype " + std::string(py::str(a.dtype())) + " and shape " +
                    shape_str(a));
  return static_cast<float*>(a.mutable_data());
}

// PyTorch's rule: r = (1 - momentum) * r + momentum * stat * scale
void update_running(float* r, const std::vector<double>& stat, double momentum, double scale) {
  for (size_t c = 0; c < stat.size(); ++c)
    r[c] = static_cast<float>((1.0 - momentum) * r[c] + momentum * stat[c] * scale);
}

}  // namespace

void bind_norm(py::module_& m) {
  m.def("batch_norm", [](py::handle xo, py::handle rm, py::handle rv, py::handle wo,
                         py::handle bo, bool training, double momentum, double eps, bool relu,
                         py::handle addo) {
    const char* fn = "batch_norm";
    BnArgs a = check_bn(fn, xo, wo, bo, training);
    if (!training && (rm.is_none() || rv.is_none()))
      value_error(fn, "running_mean and running_var are needed in evaluation mode "
                      "(training=False)");
    if (rm.is_none() != rv.is_none())
      value_error(fn, "give both running_mean and running_var, or neither");
    std::vector<double> mean(a.C), var(a.C);
    float *rmp = nullptr, *rvp = nullptr;
    if (!training) {
      mean = per_channel_f64(rm, a.C, fn, "running_mean");
      var = per_channel_f64(rv, a.C, fn, "running_var");
    } else if (!rm.is_none() && a.N * a.L > 1) {
      rmp = updatable(fn, rm, "running_mean", a.C);
      rvp = updatable(fn, rv, "running_var", a.C);
    }
    FArr add;
    if (!addo.is_none()) {
      add = to_float(addo, fn, "add");
      expect_shape(add, shape_of(a.x), fn, "add");
    }
    FArr y = empty(shape_of(a.x));
    float* yp = y.mutable_data();
    const float *xp = a.x.data(), *wp = ptr(a.weight), *bp = ptr(a.bias);
    const float* ap = addo.is_none() ? nullptr : add.data();
    {
      py::gil_scoped_release nogil;
      batch_norm_forward(yp, mean.data(), var.data(), xp, wp, bp, eps, a.N, a.C, a.L, training,
                         relu, ap);
    }
    if (rmp) {
      const double n = static_cast<double>(a.N * a.L);
      update_running(rmp, mean, momentum, 1.0);
      update_running(rvp, var, momentum, n / (n - 1.0));
    }
    return y;
  }, py::arg("x"), py::arg("running_mean"), py::arg("running_var"), py::arg("weight"),
     py::arg("bias"), py::arg("training"), py::arg("momentum"), py::arg("eps"),
     py::arg("relu") = false, py::arg("add") = py::none());

  m.def("batch_norm_backward", [](py::handle dyo, py::handle xo, py::handle rm, py::handle rv,
                                  py::handle wo, py::handle bo, bool training, double eps,
                                  bool input_grad) {
    const char* fn = "batch_norm_backward";
    BnArgs a = check_bn(fn, xo, wo, bo, training);
    FArr dy = to_float(dyo, fn, "grad_out");
    expect_shape(dy, shape_of(a.x), fn, "grad_out");
    std::vector<double> mean, var;
    if (!training) {
      if (rm.is_none() || rv.is_none())
        value_error(fn, "running_mean and running_var are needed in evaluation mode "
                        "(training=False)");
      mean = per_channel_f64(rm, a.C, fn, "running_mean");
      var = per_channel_f64(rv, a.C, fn, "running_var");
    }
    py::object dx = py::none(), dw = py::none(), db = py::none();
    float *dxp = nullptr, *dwp = nullptr, *dbp = nullptr;
    if (input_grad) {
      FArr t = empty(shape_of(a.x));
      dxp = t.mutable_data();
      dx = t;
    }
    if (!a.weight.is_none()) {
      FArr t = empty({a.C});
      dwp = t.mutable_data();
      dw = t;
    }
    if (!a.bias.is_none()) {
      FArr t = empty({a.C});
      dbp = t.mutable_data();
      db = t;
    }
    const float *dyp = dy.data(), *xp = a.x.data(), *wp = ptr(a.weight);
    {
      py::gil_scoped_release nogil;
      batch_norm_backward(dxp, dwp, dbp, dyp, xp, training ? nullptr : mean.data(),
                          training ? nullptr : var.data(), wp, eps, a.N, a.C, a.L, training);
    }
    return py::make_tuple(dx, dw, db);
  }, py::arg("grad_out"), py::arg("x"), py::arg("running_mean"), py::arg("running_var"),
     py::arg("weight"), py::arg("bias"), py::arg("training"), py::arg("eps"),
     py::arg("input_grad") = true);
}

}  // namespace bind
}  // namespace convkit
