// run_steps: nn.Sequential's forward in one call, without a Python frame per layer.
//
// The steps are those nn._execution_steps planned: (layer, None), or (layer, relu) for a layer
// whose ReLU runs in the same core call. Layers of convkit's own Conv2d, MaxPool2d, Linear,
// Flatten and ReLU classes (the exact classes, with their plain argument forms and a float32
// C-contiguous NumPy input) call the core directly and keep what their Python forward keeps
// for backward (_x, _shape); any other layer, argument form or input runs the layer's own
// Python forward (or _forward(x, True) for a fused pair). Same calls, same arguments: the same
// bits as the Python loop (nn._run_steps), which stays the path for everything this declines.
//
// At batch 1 a LeNet-5 forward spent a third of its time in the layers' Python frames; this
// call runs the same layers in two thirds of the time.
//
// run_backward: Sequential's backward the same way: layers of those classes (without a backward
// of their own on the instance, with the input their forward kept) call the core's backward and
// add the parameter gradients into .grad in place (float32 sums, as NumPy's +=); any other layer
// runs its Python backward.
#include "bindings/common.h"

namespace convkit {
namespace bind {
namespace {

// The classes run_steps recognises (nn.py registers them at import), and attribute names.
struct Known {
  PyObject *ndarray = nullptr, *conv2d = nullptr, *max_pool2d = nullptr, *linear = nullptr,
           *flatten = nullptr, *relu = nullptr;
  PyObject *s_x, *s_shape, *s_array_shape, *s_forward, *s_fwd, *s_weight, *s_bias, *s_data,
      *s_stride, *s_padding, *s_dilation, *s_groups, *s_padding_mode, *s_kernel_size,
      *s_ceil_mode, *s_return_indices, *s_zeros, *s_backward, *s_grad, *s_input_grad,
      *s_inplace, *s_start_dim, *s_end_dim;
};

Known& known() {
  static Known* k = [] {  // never freed: the interpreter may outlive static destructors
    auto* n = new Known;
    auto s = [](const char* v) { return PyUnicode_InternFromString(v); };
    n->s_x = s("_x"); n->s_shape = s("_shape"); n->s_array_shape = s("shape");
    n->s_forward = s("forward");
    n->s_fwd = s("_forward"); n->s_weight = s("weight"); n->s_bias = s("bias");
    n->s_data = s("data"); n->s_stride = s("stride"); n->s_padding = s("padding");
    n->s_dilation = s("dilation"); n->s_groups = s("groups");
    n->s_padding_mode = s("padding_mode"); n->s_kernel_size = s("kernel_size");
    n->s_ceil_mode = s("ceil_mode"); n->s_return_indices = s("return_indices");
    n->s_zeros = s("zeros"); n->s_backward = s("backward"); n->s_grad = s("grad");
    n->s_input_grad = s("input_grad");
    n->s_inplace = s("inplace");
    n->s_start_dim = s("start_dim");
    n->s_end_dim = s("end_dim");
    return n;
  }();
  return *k;
}

py::object get(py::handle o, PyObject* name) {
  PyObject* v = PyObject_GetAttr(o.ptr(), name);
  if (!v) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

void set(py::handle o, PyObject* name, py::handle v) {
  if (PyObject_SetAttr(o.ptr(), name, v.ptr()) != 0) throw py::error_already_set();
}

// A Python int (not a bool), read into *out.
bool as_int(py::handle o, int64_t* out) {
  if (!PyLong_CheckExact(o.ptr())) return false;
  *out = PyLong_AsLongLong(o.ptr());
  if (*out == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return true;
}

// A tuple of two Python ints.
bool as_pair(py::handle o, int64_t* a, int64_t* b) {
  return PyTuple_CheckExact(o.ptr()) && PyTuple_GET_SIZE(o.ptr()) == 2 &&
         as_int(PyTuple_GET_ITEM(o.ptr(), 0), a) && as_int(PyTuple_GET_ITEM(o.ptr(), 1), b);
}

// The ndarray itself (not a subclass), float32, C-contiguous, with `ndim` dimensions (any
// number for ndim < 0): what the layers' _f32 passes through unchanged.
bool plain_f32(py::handle x, int ndim) {
  if (Py_TYPE(x.ptr()) != reinterpret_cast<PyTypeObject*>(known().ndarray) ||
      !py::array_t<float, py::array::c_style>::check_(x))
    return false;
  return ndim < 0 || py::reinterpret_borrow<py::array>(x).ndim() == ndim;
}

bool has_own(py::handle layer, PyObject* name) {  // a hook: the method replaced on the instance
  PyObject* dict = PyObject_GenericGetDict(layer.ptr(), nullptr);
  if (!dict) {  // no __dict__ (__slots__): nothing replaced
    PyErr_Clear();
    return false;
  }
  const bool own = PyDict_GetItemWithError(dict, name) != nullptr;
  Py_DECREF(dict);
  if (PyErr_Occurred()) throw py::error_already_set();
  return own;
}

py::object param_data(py::handle p) {  // Parameter.data, or None
  return p.is_none() ? py::none() : get(p, known().s_data);
}

// A Conv2d's arguments in the plain forms its fast path takes (int pairs, zero padding).
struct ConvHyper {
  int64_t sh, sw, ph, pw, dh, dw, g;
};

bool conv_hyper(py::handle layer, ConvHyper* c) {
  const Known& k = known();
  if (!as_pair(get(layer, k.s_stride), &c->sh, &c->sw) ||
      !as_pair(get(layer, k.s_padding), &c->ph, &c->pw) ||
      !as_pair(get(layer, k.s_dilation), &c->dh, &c->dw) || !as_int(get(layer, k.s_groups), &c->g))
    return false;
  py::object mode = get(layer, k.s_padding_mode);
  return PyUnicode_CheckExact(mode.ptr()) && PyUnicode_Compare(mode.ptr(), k.s_zeros) == 0;
}

// Conv2d._forward's core call, or an empty object where it would take another path.
py::object conv2d_step(py::handle layer, py::handle x, bool relu) {
  const Known& k = known();
  ConvHyper c;
  if (!plain_f32(x, 4) || !conv_hyper(layer, &c)) return py::object();
  set(layer, k.s_x, x);
  return conv2d_call(x, param_data(get(layer, k.s_weight)), param_data(get(layer, k.s_bias)),
                     c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.g, relu);
}

// A MaxPool2d's window in the plain forms its fast path takes (ints; stride None = kernel).
struct PoolHyper {
  int64_t k, s, p, d;
  bool ceil;
};

bool pool_hyper(py::handle layer, PoolHyper* h) {
  const Known& k = known();
  py::object stride = get(layer, k.s_stride);
  if (!as_int(get(layer, k.s_kernel_size), &h->k) || !as_int(get(layer, k.s_padding), &h->p) ||
      !as_int(get(layer, k.s_dilation), &h->d) || !(stride.is_none() || as_int(stride, &h->s)))
    return false;
  if (stride.is_none()) h->s = h->k;
  const int ceil = PyObject_IsTrue(get(layer, k.s_ceil_mode).ptr());
  if (ceil < 0) throw py::error_already_set();
  h->ceil = ceil != 0;
  return true;
}

py::object max_pool2d_step(py::handle layer, py::handle x, bool relu) {
  PoolHyper h;
  if (!plain_f32(x, 4) || !pool_hyper(layer, &h)) return py::object();
  set(layer, known().s_x, x);
  return max_pool2d_call(x, h.k, h.s, h.p, h.d, h.ceil, relu);
}

py::object linear_step(py::handle layer, py::handle x, bool relu) {
  const Known& k = known();
  if (!plain_f32(x, -1)) return py::object();
  set(layer, k.s_x, x);
  return linear_call(x, param_data(get(layer, k.s_weight)), param_data(get(layer, k.s_bias)),
                     relu);
}

py::object flatten_step(py::handle layer, py::handle x) {  // x.reshape(x.shape[0], -1)
  int64_t first, last;  // other axes than the default (1, -1): the layer's own forward
  if (!plain_f32(x, -1) || !as_int(get(layer, known().s_start_dim), &first) ||
      !as_int(get(layer, known().s_end_dim), &last) || first != 1 || last != -1)
    return py::object();
  py::array a = py::reinterpret_borrow<py::array>(x);
  if (a.ndim() < 1) return py::object();
  set(layer, known().s_shape, get(x, known().s_array_shape));
  return a.reshape({static_cast<py::ssize_t>(a.shape(0)), py::ssize_t(-1)});
}

py::object relu_step(py::handle layer, py::handle x) {
  const int inplace = PyObject_IsTrue(get(layer, known().s_inplace).ptr());
  if (inplace < 0) throw py::error_already_set();
  // (inplace=True writes into x: the layer's own forward does that)
  if (!plain_f32(x, -1) || inplace) return py::object();
  set(layer, known().s_x, x);
  return activation_call(0, x, 0.f, py::none());  // Act::relu
}

// The step's layer (and the ReLU fused into it) on x.
py::object run_step(py::handle layer, py::handle relu, py::handle x) {
  const Known& k = known();
  PyObject* t = reinterpret_cast<PyObject*>(Py_TYPE(layer.ptr()));
  const bool fused = !relu.is_none();
  py::object y;
  if (t == k.conv2d) y = conv2d_step(layer, x, fused);
  else if (t == k.linear) y = linear_step(layer, x, fused);
  else if (t == k.max_pool2d) y = max_pool2d_step(layer, x, fused);
  else if (!fused && t == k.flatten) y = flatten_step(layer, x);
  else if (!fused && t == k.relu) y = relu_step(layer, x);
  if (!y) {  // the layer's own forward
    PyObject* r = fused ? PyObject_CallMethodObjArgs(layer.ptr(), k.s_fwd, x.ptr(), Py_True,
                                                     nullptr)
                        : PyObject_CallOneArg(layer.ptr(), x.ptr());
    if (!r) throw py::error_already_set();
    y = py::reinterpret_steal<py::object>(r);
  }
  if (fused) set(relu, k.s_x, y);  // the ReLU's backward reads y > 0 as x > 0
  return y;
}

// None (running nothing) when the steps are out of date: a layer has gained a hook, or a max
// pool returns indices now (it can no longer move or fuse).
py::object run_steps(py::list steps, py::object x) {
  const Known& k = known();
  if (!k.ndarray) throw std::runtime_error("run_steps: the layer classes are not registered");
  const py::ssize_t n = PyList_GET_SIZE(steps.ptr());
  for (py::ssize_t i = 0; i < n; ++i) {
    PyObject* step = PyList_GET_ITEM(steps.ptr(), i);
    if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) != 2)
      throw py::type_error("run_steps: each step must be a (layer, relu or None) tuple");
    for (int j = 0; j < 2; ++j) {
      py::handle m = PyTuple_GET_ITEM(step, j);
      if (m.is_none()) continue;
      if (has_own(m, k.s_forward)) return py::none();
      if (reinterpret_cast<PyObject*>(Py_TYPE(m.ptr())) == k.max_pool2d) {
        const int ri = PyObject_IsTrue(get(m, k.s_return_indices).ptr());
        if (ri < 0) throw py::error_already_set();
        if (ri) return py::none();
      }
    }
  }
  for (py::ssize_t i = 0; i < n; ++i) {
    PyObject* step = PyList_GET_ITEM(steps.ptr(), i);
    x = run_step(PyTuple_GET_ITEM(step, 0), PyTuple_GET_ITEM(step, 1), x);
  }
  return x;
}

// param.grad += g, as the layers' backward writes it (in place where .grad is a float32 array
// of g's size; NumPy's in-place add otherwise).
void add_grad(py::handle param, py::handle g) {
  const Known& k = known();
  py::object grad = get(param, k.s_grad);
  if (py::array_t<float, py::array::c_style>::check_(grad)) {
    auto a = py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(grad);
    auto b = py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(g);
    if (a.size() == b.size() && a.writeable()) {
      float* d = a.mutable_data();
      const float* s = b.data();
      for (py::ssize_t i = 0, n = a.size(); i < n; ++i) d[i] += s[i];
      return;
    }
  }
  PyObject* r = PyNumber_InPlaceAdd(grad.ptr(), g.ptr());
  if (!r) throw py::error_already_set();
  set(param, k.s_grad, py::reinterpret_steal<py::object>(r));
}

// The saved input of a fast layer: the plain float32 array its forward kept, or null.
py::object saved_input(py::handle layer, int ndim) {
  py::object x = get(layer, known().s_x);
  return plain_f32(x, ndim) ? x : py::object();
}

// The layer's backward of g through the core, or an empty object where it would take another
// path.
py::object fast_backward(py::handle layer, py::handle g, bool input_grad) {
  const Known& k = known();
  PyObject* t = reinterpret_cast<PyObject*>(Py_TYPE(layer.ptr()));
  if (has_own(layer, k.s_backward)) return py::object();
  if (t == k.conv2d) {
    ConvHyper c;
    py::object x = saved_input(layer, 4);
    if (!x || !conv_hyper(layer, &c)) return py::object();
    py::object w = get(layer, k.s_weight), b = get(layer, k.s_bias);
    py::tuple r = conv2d_backward_call(g, x, get(w, k.s_data), param_data(b), c.sh, c.sw, c.ph,
                                       c.pw, c.dh, c.dw, c.g, input_grad);
    add_grad(w, r[1]);
    if (!b.is_none()) add_grad(b, r[2]);
    return r[0];
  }
  if (t == k.linear) {
    py::object x = saved_input(layer, -1);
    if (!x) return py::object();
    py::object w = get(layer, k.s_weight), b = get(layer, k.s_bias);
    py::tuple r = linear_backward_call(g, x, get(w, k.s_data), param_data(b));
    add_grad(w, r[1]);
    if (!b.is_none()) add_grad(b, r[2]);
    return r[0];
  }
  if (t == k.max_pool2d) {
    PoolHyper h;
    py::object x = saved_input(layer, 4);
    if (!x || !pool_hyper(layer, &h)) return py::object();
    return max_pool2d_backward_call(g, x, h.k, h.s, h.p, h.d, h.ceil);
  }
  if (t == k.relu) {
    py::object x = saved_input(layer, -1);
    if (!x) return py::object();
    return activation_backward_call(0, g, x, 0.f);  // Act::relu
  }
  if (t == k.flatten && Py_TYPE(g.ptr()) == reinterpret_cast<PyTypeObject*>(k.ndarray)) {
    py::object shape = get(layer, k.s_shape);
    if (!PyTuple_CheckExact(shape.ptr())) return py::object();
    return g.attr("reshape")(shape);
  }
  return py::object();
}

// A first Conv2d (stride 1, zero padding) followed by a MaxPool2d(2) whose input gradient
// nobody reads: its weight and bias gradients straight from the pool's gradient g
// (conv2d_weight_grad_maxpool2x2: a quarter of the terms, and no dense gradient written).
// False (nothing done) where that does not apply or declines.
bool conv_pool_backward(py::handle conv, py::handle pool, py::handle g) {
  const Known& k = known();
  if (Py_TYPE(conv.ptr()) != reinterpret_cast<PyTypeObject*>(k.conv2d) ||
      Py_TYPE(pool.ptr()) != reinterpret_cast<PyTypeObject*>(k.max_pool2d) ||
      has_own(conv, k.s_backward) || has_own(pool, k.s_backward) || !plain_f32(g, 4))
    return false;
  ConvHyper c;
  PoolHyper h;
  if (!conv_hyper(conv, &c) || c.sh != 1 || c.sw != 1 || c.dh != 1 || c.dw != 1 || c.g != 1 ||
      !pool_hyper(pool, &h) || h.k != 2 || h.s != 2 || h.p != 0 || h.d != 1 || h.ceil)
    return false;
  py::object x = saved_input(conv, 4), y = saved_input(pool, 4);
  if (!x || !y) return false;
  py::object w = get(conv, k.s_weight), b = get(conv, k.s_bias);
  py::object r = conv2d_weight_grad_maxpool2x2_call(g, y, x, get(w, k.s_data), param_data(b),
                                                    c.ph, c.pw);
  if (r.is_none()) return false;
  add_grad(w, py::reinterpret_borrow<py::tuple>(r)[0]);
  if (!b.is_none()) add_grad(b, py::reinterpret_borrow<py::tuple>(r)[1]);
  return true;
}

// Backward through `layers` (in the order forward ran them), last to first; input_grad goes
// to the first layer only.
py::object run_backward(py::list layers, py::object g, bool input_grad) {
  const Known& k = known();
  if (!k.ndarray) throw std::runtime_error("run_backward: the layer classes are not registered");
  for (py::ssize_t i = PyList_GET_SIZE(layers.ptr()) - 1; i >= 0; --i) {
    py::handle layer = PyList_GET_ITEM(layers.ptr(), i);
    if (i == 1 && !input_grad &&
        conv_pool_backward(PyList_GET_ITEM(layers.ptr(), 0), layer, g))
      return py::none();
    const bool ig = input_grad || i > 0;
    py::object r = fast_backward(layer, g, ig);
    if (!r) {
      py::object method = get(layer, k.s_backward);
      py::dict kw;
      kw[py::handle(k.s_input_grad)] = py::bool_(ig);
      r = method(g, **kw);
    }
    g = std::move(r);
  }
  return g;
}

}  // namespace

void bind_sequential(py::module_& m) {
  m.def("run_backward", &run_backward, py::arg("layers"), py::arg("grad_out"),
        py::arg("input_grad"),
        "Sequential's backward: each layer's backward, last to first (the core's directly for "
        "convkit's own Conv2d, Linear, MaxPool2d, ReLU and Flatten).");
  m.def("run_steps", &run_steps, py::arg("steps"), py::arg("x"),
        "Sequential's planned (layer, relu) steps on x in one call; None when they are out of "
        "date (a layer gained a hook).");
  m.def("_register_layers", [](py::handle ndarray, py::handle conv2d, py::handle max_pool2d,
                               py::handle linear, py::handle flatten, py::handle relu) {
    Known& k = known();
    for (PyObject** slot : {&k.ndarray, &k.conv2d, &k.max_pool2d, &k.linear, &k.flatten,
                            &k.relu})
      Py_XDECREF(*slot);
    k.ndarray = ndarray.inc_ref().ptr();
    k.conv2d = conv2d.inc_ref().ptr();
    k.max_pool2d = max_pool2d.inc_ref().ptr();
    k.linear = linear.inc_ref().ptr();
    k.flatten = flatten.inc_ref().ptr();
    k.relu = relu.inc_ref().ptr();
  }, "The classes run_steps runs without their Python forward (nn.py, at import).");
}

}  // namespace bind
}  // namespace convkit
