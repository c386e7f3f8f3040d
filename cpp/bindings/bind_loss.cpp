// Loss bindings: cross_entropy, binary_cross_entropy_with_logits, mse_loss and their backward.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

using LArr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

struct CEArgs {
  FArr logits;
  LArr labels;
  int64_t N, K;
};

CEArgs check_ce(const char* fn, py::handle lo, py::handle yo) {
  CEArgs a{to_float(lo, fn, "logits"), to_labels(yo, fn, "labels"), 0, 0};
  expect_ndim(a.logits, 2, fn, "logits", "(N, num_classes)");
  a.N = a.logits.shape(0);
  a.K = a.logits.shape(1);
  if (a.labels.ndim() != 1 || a.labels.shape(0) != a.N)
    value_error(fn, "expected labels of shape (" + std::to_string(a.N) + ",) to match logits " +
                        shape_str(a.logits) + ", but got " + shape_str(a.labels));
  if (a.K == 0 && a.N > 0) value_error(fn, "logits " + shape_str(a.logits) + " has no classes");
  const int64_t* y = a.labels.data();
  for (int64_t i = 0; i < a.N; ++i)
    if (y[i] < 0 || y[i] >= a.K)
      value_error(fn, "labels[" + std::to_string(i) + "] = " + std::to_string(y[i]) +
                          " is out of range: expected a class in [0, " +
                          std::to_string(a.K - 1) + "]");
  return a;
}

std::pair<FArr, FArr> check_pair(const char* fn, py::handle ao, const char* an, py::handle bo,
                                 const char* bn) {
  FArr a = to_float(ao, fn, an), b = to_float(bo, fn, bn);
  if (shape_of(a) != shape_of(b))
    value_error(fn, std::string("expected ") + bn + " of the same shape as " + an + " " +
                        shape_str(a) + ", but got " + shape_str(b));
  return {a, b};
}

using PairLoss = double (*)(const float*, const float*, int64_t);
using PairLossBwd = void (*)(float*, float, const float*, const float*, int64_t);

template <PairLoss F>
double pair_fwd(const char* fn, py::handle ao, const char* an, py::handle bo, const char* bn) {
  auto ab = check_pair(fn, ao, an, bo, bn);
  const float *a = ab.first.data(), *b = ab.second.data();
  const int64_t n = ab.first.size();
  py::gil_scoped_release nogil;
  return F(a, b, n);
}

template <PairLossBwd F>
FArr pair_bwd(const char* fn, float g, py::handle ao, const char* an, py::handle bo,
              const char* bn) {
  auto ab = check_pair(fn, ao, an, bo, bn);
  FArr d = empty(shape_of(ab.first));
  float* dp = d.mutable_data();
  const float *a = ab.first.data(), *b = ab.second.data();
  const int64_t n = ab.first.size();
  {
    py::gil_scoped_release nogil;
    F(dp, g, a, b, n);
  }
  return d;
}

}  // namespace

void bind_loss(py::module_& m) {
  m.def("cross_entropy", [](py::handle lo, py::handle yo) {
    CEArgs a = check_ce("cross_entropy", lo, yo);
    const float* lp = a.logits.data();
    const int64_t* yp = a.labels.data();
    py::gil_scoped_release nogil;
    return cross_entropy_forward(lp, yp, a.N, a.K);
  }, py::arg("logits"), py::arg("labels"));
  m.def("cross_entropy_backward", [](float g, py::handle lo, py::handle yo) {
    CEArgs a = check_ce("cross_entropy_backward", lo, yo);
    FArr d = empty({a.N, a.K});
    float* dp = d.mutable_data();
    const float* lp = a.logits.data();
    const int64_t* yp = a.labels.data();
    {
      py::gil_scoped_release nogil;
      cross_entropy_backward(dp, g, lp, yp, a.N, a.K);
    }
    return d;
  }, py::arg("grad_out"), py::arg("logits"), py::arg("labels"));
  m.def("bce_with_logits", [](py::handle x, py::handle t) {
    return pair_fwd<bce_with_logits_forward>("binary_cross_entropy_with_logits", x, "logits", t,
                                             "targets");
  });
  m.def("bce_with_logits_backward", [](float g, py::handle x, py::handle t) {
    return pair_bwd<bce_with_logits_backward>("binary_cross_entropy_with_logits_backward", g, x,
                                              "logits", t, "targets");
  });
  m.def("mse_loss", [](py::handle p, py::handle t) {
    return pair_fwd<mse_forward>("mse_loss", p, "pred", t, "target");
  });
  m.def("mse_loss_backward", [](float g, py::handle p, py::handle t) {
    return pair_bwd<mse_backward>("mse_loss_backward", g, p, "pred", t, "target");
  });
}

}  // namespace bind
}  // namespace convkit
