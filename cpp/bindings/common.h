// Helpers shared by the bind_*.cpp files: turning any array-like into a C-contiguous float32
// array, and error messages of the form "fn: argument 'x' expected ..., but got ...".
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "convkit/convkit.h"

namespace py = pybind11;

namespace convkit {
namespace bind {

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a);
std::string shape_str(const std::vector<int64_t>& s);

[[noreturn]] void value_error(const std::string& fn, const std::string& msg);

// Any numeric array-like -> C-contiguous float32 (copying only when needed).
// Non-numeric data (strings, objects, complex) raises TypeError naming fn and arg.
FArr to_float(py::handle obj, const char* fn, const char* arg);
// Integer labels -> int64 array; floats or non-numeric raise TypeError.
py::array_t<int64_t, py::array::c_style | py::array::forcecast> to_labels(py::handle obj,
                                                                           const char* fn,
                                                                           const char* arg);

// Requires a.ndim() == nd.
void expect_ndim(const py::array& a, int nd, const char* fn, const char* arg, const char* layout);
// Requires a to have exactly `shape`.
void expect_shape(const py::array& a, const std::vector<int64_t>& shape, const char* fn,
                  const char* arg);

// A float array of shape (n,) as float64 values (a batch norm's running statistics), or a
// ValueError naming fn and arg.
std::vector<double> per_channel_f64(py::handle h, int64_t n, const char* fn, const char* arg);

// a * b * ... with overflow detection: raises ValueError naming fn when the product of sizes
// does not fit in int64 (or exceeds what can be addressed).
int64_t checked_numel(const std::vector<int64_t>& dims, const char* fn, const char* what);

// An optional bias: None, or a vector of `n` floats matching `weight` (ValueError otherwise).
py::object optional_bias(py::handle bias, int64_t n, const FArr& weight, const char* fn);
// The data of an optional_bias result, or null for None.
inline const float* bias_ptr(const py::object& b) {
  return b.is_none() ? nullptr : b.cast<FArr>().data();
}

FArr empty(const std::vector<int64_t>& shape);
// y = max(y, 0) in place (activation_forward's relu), with the GIL released: an op and the ReLU
// after it in one call (the same bits as the ReLU run on the op's output)
void relu_in_place(FArr& y);
std::vector<int64_t> shape_of(const py::array& a);

// The forward bindings, for run_steps (bind_sequential.cpp), which calls them without a
// Python frame: _core.conv2d, _core.max_pool2d, _core.linear and _core.activation.
FArr conv2d_call(py::handle x, py::handle w, py::handle b, int64_t sh, int64_t sw, int64_t ph,
                 int64_t pw, int64_t dh, int64_t dw, int64_t groups, bool relu);
py::object max_pool2d_call(py::handle x, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil,
                           bool relu);
FArr linear_call(py::handle x, py::handle w, py::handle b, bool relu);
FArr activation_call(int kind, py::handle x, float param, py::handle add);
// and the backward bindings, for run_backward: _core.conv2d_backward, max_pool2d_backward,
// linear_backward and activation_backward
py::tuple conv2d_backward_call(py::handle dy, py::handle x, py::handle w, py::handle b,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                               int64_t dw, int64_t groups, bool input_grad);
// (dw, db) of a stride-1 convolution through a 2x2 / stride-2 max pool from the pool's gradient
// g, y the convolution's output; None where conv2d_weight_grad_maxpool2x2 declines
py::object conv2d_weight_grad_maxpool2x2_call(py::handle g, py::handle y, py::handle x,
                                              py::handle w, py::handle b, int64_t ph, int64_t pw);
FArr max_pool2d_backward_call(py::handle dy, py::handle x, int64_t k, int64_t s, int64_t p,
                              int64_t d, bool ceil);
py::tuple linear_backward_call(py::handle dy, py::handle x, py::handle w, py::handle b);
FArr activation_backward_call(int kind, py::handle dy, py::handle x, float param);

void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_activation(py::module_& m);
void bind_softmax(py::module_& m);
void bind_loss(py::module_& m);
void bind_linear(py::module_& m);
void bind_norm(py::module_& m);
void bind_sequential(py::module_& m);
void bind_optim(py::module_& m);

}  // namespace bind
}  // namespace convkit
