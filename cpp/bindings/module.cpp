// convkit._core: the pybind11 module. Validation and conversion happen here, before the GIL is
// released; the C++ core never sees a malformed shape.
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "bindings/common.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {
namespace bind {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << '(';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  if (s.size() == 1) o << ',';
  o << ')';
  return o.str();
}

std::vector<int64_t> shape_of(const py::array& a) {
  std::vector<int64_t> s(static_cast<size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s[i] = a.shape(i);
  return s;
}

std::string shape_str(const py::array& a) { return shape_str(shape_of(a)); }

void value_error(const std::string& fn, const std::string& msg) {
  throw py::value_error(fn + ": " + msg);
}

// Anything array-like as an ndarray, without a copy where the layout allows: NumPy arrays as
// they are; framework tensors (PyTorch's, also with requires_grad) detached first, and refused
// when they live on another device; objects with only __dlpack__ through numpy.from_dlpack;
// the rest through numpy.asarray (__array__, __array_interface__, buffers, sequences).
static py::array as_array(py::handle obj, const char* fn, const char* arg) {
  if (obj.is_none())
    throw py::type_error(std::string(fn) + ": argument '" + arg +
                         "' expected a numeric array, but got None");
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  py::object o = py::reinterpret_borrow<py::object>(obj);
  try {
    if (py::hasattr(o, "detach") && py::hasattr(o, "requires_grad") && py::hasattr(o, "device")) {
      py::object dev = o.attr("device");
      std::string type = py::hasattr(dev, "type") ? py::str(dev.attr("type")).cast<std::string>()
                                                  : std::string("cpu");
      if (type != "cpu")
        throw py::type_error(std::string(fn) + ": argument '" + arg + "' is a tensor on " +
                             py::str(dev).cast<std::string>() +
                             "; convkit runs on the CPU: pass tensor.cpu()");
      o = o.attr("detach")();
    }
    py::module_ np = py::module_::import("numpy");
    if (!py::hasattr(o, "__array__") && !py::hasattr(o, "__array_interface__") &&
        py::hasattr(o, "__dlpack__"))
      return np.attr("from_dlpack")(o);
    return np.attr("asarray")(o);
  } catch (py::error_already_set& e) {
    throw py::type_error(std::string(fn) + ": argument '" + arg +
                         "' could not be converted to an array: " + e.what());
  }
}

// The op whose arguments this thread converted last: empty() names it in a MemoryError.
thread_local const char* t_current_fn = "convkit";

FArr to_float(py::handle obj, const char* fn, const char* arg) {
  t_current_fn = fn;
  py::array a = as_array(obj, fn, arg);
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::type_error(std::string(fn) + ": argument '" + arg +
                         "' expected a real numeric array, but got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  return FArr::ensure(a);
}

py::array_t<int64_t, py::array::c_style | py::array::forcecast> to_labels(py::handle obj,
                                                                           const char* fn,
                                                                           const char* arg) {
  py::array a = as_array(obj, fn, arg);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u')
    throw py::type_error(std::string(fn) + ": argument '" + arg +
                         "' expected integer class labels, but got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

void expect_ndim(const py::array& a, int nd, const char* fn, const char* arg, const char* layout) {
  if (a.ndim() != nd)
    value_error(fn, std::string("expected ") + arg + " to be " + std::to_string(nd) + "-D " +
                        layout + ", but got a " + std::to_string(a.ndim()) +
                        "-D array of shape " + shape_str(a));
}

void expect_shape(const py::array& a, const std::vector<int64_t>& shape, const char* fn,
                  const char* arg) {
  if (shape_of(a) != shape)
    value_error(fn, std::string("expected ") + arg + " of shape " + shape_str(shape) +
                        ", but got " + shape_str(a));
}

std::vector<double> per_channel_f64(py::handle h, int64_t n, const char* fn, const char* arg) {
  FArr v = to_float(h, fn, arg);
  expect_shape(v, {n}, fn, arg);
  return std::vector<double>(v.data(), v.data() + n);
}

py::object optional_bias(py::handle bo, int64_t n, const FArr& weight, const char* fn) {
  if (bo.is_none()) return py::none();
  FArr b = to_float(bo, fn, "bias");
  if (b.ndim() != 1 || b.shape(0) != n)
    value_error(fn, "expected bias of shape (" + std::to_string(n) + ",) to match weight " +
                        shape_str(weight) + ", but got " + shape_str(b));
  return b;
}

int64_t checked_numel(const std::vector<int64_t>& dims, const char* fn, const char* what) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) value_error(fn, std::string(what) + " has a negative size " + shape_str(dims));
    if (__builtin_mul_overflow(n, d, &n) || n > (int64_t(1) << 48))
      value_error(fn, std::string(what) + " of shape " + shape_str(dims) +
                          " has too many elements (the product of its sizes overflows)");
  }
  return n;
}

// Result arrays of 256 KiB and more come from a small cache of freed buffers: a training loop
// allocates the same sizes every step, and fresh memory from the OS costs a page fault per 4 KiB
// on first touch (a quarter of a LeNet-5 step was spent there). The arrays are ordinary NumPy
// arrays whose base is a capsule; freeing one returns its buffer to the cache (GIL held).
namespace {
constexpr size_t kPoolMin = 256 * 1024;
constexpr size_t kPoolMaxCached = size_t(256) << 20;  // bytes kept for reuse, at most
constexpr size_t kHeader = 64;                         // keeps the data 64-byte aligned

std::unordered_map<size_t, std::vector<char*>>& pool() {
  static auto* p = new std::unordered_map<size_t, std::vector<char*>>();  // never destroyed:
  return *p;                                    // arrays may outlive static destruction order
}
size_t g_cached = 0;

void pool_release(void* data) {
  char* base = static_cast<char*>(data) - kHeader;
  const size_t bytes = *reinterpret_cast<size_t*>(base);
  if (bytes > kPoolMaxCached) {
    std::free(base);
    return;
  }
  if (g_cached + bytes > kPoolMaxCached) {
    // The working set changed (say, from training batches to a big evaluation batch): drop
    // what is cached rather than let old sizes crowd out the new ones.
    for (auto& kv : pool())
      for (char* b : kv.second) std::free(b);
    pool().clear();
    g_cached = 0;
  }
  pool()[bytes].push_back(base);
  g_cached += bytes;
}

float* pool_take(size_t bytes) {
  auto it = pool().find(bytes);
  if (it != pool().end() && !it->second.empty()) {
    char* base = it->second.back();
    it->second.pop_back();
    g_cached -= bytes;
    return reinterpret_cast<float*>(base + kHeader);
  }
  char* base = static_cast<char*>(std::aligned_alloc(64, kHeader + ((bytes + 63) & ~size_t(63))));
  if (!base) throw std::bad_alloc();
  *reinterpret_cast<size_t*>(base) = bytes;
  return reinterpret_cast<float*>(base + kHeader);
}
}  // namespace

void relu_in_place(FArr& y) {
  float* p = y.mutable_data();
  const int64_t n = y.size();
  py::gil_scoped_release nogil;
  activation_forward(Act::relu, 0.f, p, p, n);
}

FArr empty(const std::vector<int64_t>& shape) {
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  const size_t bytes = n * sizeof(float);
  auto out_of_memory = [&]() {
    char gib[32];
    std::snprintf(gib, sizeof gib, "%.2f", double(bytes) / double(1 << 30));
    PyErr_SetString(PyExc_MemoryError, (std::string(t_current_fn) + ": cannot allocate " +
                                        gib + " GiB for a result of shape " + shape_str(shape))
                                           .c_str());
    throw py::error_already_set();
  };
  if (bytes < kPoolMin) {
    try {
      return FArr(s);
    } catch (const py::error_already_set& e) {
      if (e.matches(PyExc_MemoryError)) out_of_memory();
      throw;
    }
  }
  float* data = nullptr;
  try {
    data = pool_take(bytes);
  } catch (const std::bad_alloc&) {
    out_of_memory();
  }
  py::capsule owner(data, [](void* p) { pool_release(p); });
  return FArr(s, data, owner);
}

}  // namespace bind
}  // namespace convkit

PYBIND11_MODULE(_core, m) {
  using namespace convkit;
  m.doc() = "convkit C++ core (see convkit.functional for the documented API)";
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: expected n >= 1, but got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("have_openmp", &have_openmp);
  m.def("runtime", []() {
#ifdef CONVKIT_HAVE_OPENMP
    if (use_openmp_runtime()) return "openmp";
#endif
#ifdef CONVKIT_HAVE_TBB
    if (use_tbb_runtime()) return "tbb";
#endif
    return "pool";
  }, "The threading runtime: convkit's pool, or OpenMP's (CONVKIT_RUNTIME=openmp).");
  m.def("compiler", &compiler_id);
  m.def("isa", &isa_name);
  m.def("best_isa", &best_isa);
  m.def("cpu_features", &cpu_features);
  m.def("set_isa", [](const std::string& name) {
    if (!set_isa(name))
      throw py::value_error("set_isa: '" + name + "' is not available on this CPU (available up to '" +
                            best_isa() + "'; choose scalar, avx2 or avx512)");
  }, py::arg("name"));
  m.def("as_array", [](py::handle obj, const std::string& fn, const std::string& arg) {
    return convkit::bind::as_array(obj, fn.c_str(), arg.c_str());
  }, py::arg("obj"), py::arg("fn") = "convkit", py::arg("arg") = "input",
  "obj as an ndarray without a copy where possible (tensors detached, __dlpack__ read).");
  m.def("kernel_tile", []() { return py::make_tuple(g_kernels->mr, g_kernels->nr); });
  m.def("wide_fma", []() { return g_kernels->wide_fma; },
        "Whether the table in use runs AVX-512 multiply-adds at full width (the planner's rules).");
  bind::bind_conv(m);
  bind::bind_pool(m);
  bind::bind_activation(m);
  bind::bind_softmax(m);
  bind::bind_loss(m);
  bind::bind_linear(m);
  bind::bind_norm(m);
  bind::bind_sequential(m);
  bind::bind_optim(m);
}
