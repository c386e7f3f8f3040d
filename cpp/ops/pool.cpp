// Pooling front-ends: one (H, W) plane per work item, or for small planes a group of 16 planes
// pooled in the vector lanes (lanes_pay); planes never share memory, so results do not depend
// on the thread count. Forward uses the ISA's plane or lanes kernel; backward recomputes each
// window's argmax from x (max) or spreads dy / divisor over the window (avg), accumulating where
// windows overlap. Adaptive pooling: window i of an axis spans [floor(i*n/m), ceil((i+1)*n/m)).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

// PyTorch's pooling_output_shape for one axis.
static int64_t pool_out(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil,
                        bool ceil_mode) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;  // window would start in the padding
  return out;
}

void pool2d_out_size(Pool2dShape& s) {
  s.P = pool_out(s.H, s.R, s.ph, s.sh, s.dh, s.ceil_mode);
  s.Q = pool_out(s.W, s.S, s.pw, s.sw, s.dw, s.ceil_mode);
}

// The window's extent along one axis: its start i * stride - pad, clipped to the padded input,
// and to the input too unless padding counts.
static int64_t avg_extent(int64_t i, int64_t stride, int64_t pad, int64_t k, int64_t n,
                          bool include_pad) {
  const int64_t a = i * stride - pad, b = std::min(a + k, n + pad);
  return include_pad ? b - a : std::min(b, n) - std::max<int64_t>(a, 0);
}

int64_t avg_pool2d_rows(const Pool2dShape& s, int64_t p) {
  return avg_extent(p, s.sh, s.ph, s.R, s.H, s.count_include_pad);
}

int64_t avg_pool2d_cols(const Pool2dShape& s, int64_t q) {
  return avg_extent(q, s.sw, s.pw, s.S, s.W, s.count_include_pad);
}

int64_t avg_pool2d_divisor(const Pool2dShape& s, int64_t p, int64_t q) {
  return s.divisor ? s.divisor : avg_pool2d_rows(s, p) * avg_pool2d_cols(s, q);
}

// The first maximum of window (p, q) of plane xp in row-major order (a NaN takes over, as
// PyTorch, so the last NaN): its flat index, or -1 for a window with no element inside the input.
static int64_t window_argmax(const float* xp, const Pool2dShape& s, int64_t p, int64_t q) {
  int64_t arg = -1;
  float m = -INFINITY;
  const int64_t h0 = p * s.sh - s.ph, w0 = q * s.sw - s.pw;
  for (int64_t r = 0; r < s.R; ++r) {
    const int64_t h = h0 + r * s.dh;
    if (h < 0 || h >= s.H) continue;
    for (int64_t t = 0; t < s.S; ++t) {
      const int64_t v = w0 + t * s.dw;
      if (v < 0 || v >= s.W) continue;
      const float e = xp[h * s.W + v];
      if (arg < 0 || e > m || std::isnan(e)) {
        m = e;
        arg = h * s.W + v;
      }
    }
  }
  return arg;
}

static bool is_2x2(const Pool2dShape& s) {
  return s.R == 2 && s.S == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 &&
         s.dh == 1 && s.dw == 1 && 2 * s.P <= s.H && 2 * s.Q <= s.W;  // no ceil_mode window
}

// The kernels' separable argmax indexes planes with int32; a plane of 2^31 floats or more (8 GiB)
// takes the plain window scan instead.
static bool argmax_fits(int64_t H, int64_t W) { return H * W < (int64_t(1) << 31); }

// Each window's maximum and winner of plane i: y (P, Q), arg (P, Q) in the caller's buffers.
static void plane_argmax(float* y, int32_t* arg, const float* xp, const Pool2dShape& s) {
  float* work = scratch(Buf::pool_rows, maxpool_argmax_floats(s));
  g_kernels->maxpool_argmax_plane(y, arg, xp, s, work);
}

// Small planes go 16 at a time into the vector lanes (planes_to_lanes), are pooled there, and
// come back by a transpose: a row of a few outputs left most of a vector idle in the plane
// kernels, whose setup per plane cost more than the pooling (see lanes_pay).
static int g_pool_forced = 0;  // pool2d_force: 0 the choice below, 1 planes, 2 lanes

void pool2d_force(const std::string& name) {
  if (name.empty()) g_pool_forced = 0;
  else if (name == "planes") g_pool_forced = 1;
  else if (name == "lanes") g_pool_forced = 2;
  else throw std::invalid_argument("pool2d_force: expected 'planes', 'lanes' or '', but got '" +
                                   name + "'");
}

constexpr int64_t kMaxLanesPlane = int64_t(1) << 18;  // 16 planes of it: 16 MiB of lanes

// Where the lanes pay (AMD EPYC Zen 4, 1 and 2 threads, 2x2, 3x3 and 5x5 windows at strides 1
// and 2, planes 4x4 to 112x112, forced both ways, medians). AVX-512: 3x3 and 5x5 max pooling
// 6-17x forward and 4-14x backward up to 14x14, 2.3-3.5x forward at 28x28-56x56, 1.3-1.7x
// forward (3.0x backward at stride 2) at 112x112, but a 5x5 stride-1 backward 0.9-1.1x from
// 56x56; average pooling 2.0-9.4x forward and 1.2-8.5x backward at every size up to 112x112.
// With 8 or 4 lanes (AVX2, the scalar build) max pooling pays only up to 14x14 (1.2-4.5x; past
// it 0.3-2.5x, mixed), average pooling everywhere (1.4-6.9x forward). The 2x2 / stride-2
// kernels only up to 8x8 (1.1-3.6x; 0.2-0.9x past; at AVX2 the average forward 0.86x there).
// A group of 16 planes is one work item: too few groups for the threads left a core idle (16
// planes of 64x64 at 2 threads: 0.2-1.0x), so small planes want a group per thread, larger
// ones two.
enum class PoolOp { max_fwd, max_bwd, avg_fwd, avg_bwd };

static bool lanes_pay(const Pool2dShape& s, PoolOp op) {
  const int64_t HW = s.H * s.W;
  if (HW > kMaxLanesPlane) return false;
  if (g_pool_forced) return g_pool_forced == 2;
  const int64_t groups = (s.N * s.C + 15) / 16, nt = get_num_threads();
  if (groups < (HW <= 1024 ? nt : 2 * nt) || HW > 128 * 128) return false;
  const bool strided = s.sw > 1, wide = g_kernels->lanes == 16;
  switch (op) {
    case PoolOp::max_fwd:
      if (is_2x2(s)) return wide && HW <= 64;
      return wide ? HW <= 56 * 56 || strided : HW <= 14 * 14;
    case PoolOp::max_bwd:
      if (is_2x2(s)) return HW <= 64;
      return wide ? HW <= 32 * 32 || strided : HW <= 14 * 14;
    case PoolOp::avg_fwd:
      return is_2x2(s) && s.divisor == 0 ? wide && HW <= 64 : true;
    case PoolOp::avg_bwd:
      return true;
  }
  return false;
}

// Runs fn(i0, n) over the groups of up to 16 planes (work: flops, as parallel_for's).
template <class F>
static void plane_groups(int64_t planes, double work, F&& fn) {
  parallel_for((planes + 15) / 16, work, [&](int64_t g) {
    fn(g * 16, static_cast<int>(std::min<int64_t>(16, planes - g * 16)));
  });
}
// A pooling op's work for parallel_for: every window tap of every output
static double pool_work(const Pool2dShape& s) { return 8.0 * s.N * s.C * s.P * s.Q * s.R * s.S; }
template <class F>
static void plane_groups(const Pool2dShape& s, F&& fn) {
  plane_groups(s.N * s.C, pool_work(s), fn);
}

// Every group of planes through the lanes: its planes of `in` (in_len floats each) into them,
// kern(out lanes, in lanes), and back into the planes of `out` (out_len floats each).
template <class K>
static void through_lanes(float* out, int64_t out_len, const float* in, int64_t in_len,
                          int64_t planes, double work, K&& kern) {
  plane_groups(planes, work, [&](int64_t i0, int n) {
    float* it = scratch(Buf::pool_rows, 16 * in_len);
    float* ot = scratch(Buf::pool_arg, 16 * out_len);
    g_kernels->planes_to_lanes(it, in + i0 * in_len, in_len, n, in_len);
    kern(ot, it);
    g_kernels->transpose(out + i0 * out_len, out_len, ot, 16, out_len, n);
  });
}

// The maxima (ym) and winners (ya) of planes i0 .. i0 + n - 1 in the lanes.
static void max_lanes(float** ym, int32_t** ya, const float* x, int64_t i0, int n,
                      const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  float* xt = scratch(Buf::pool_rows, 16 * HW);
  *ym = scratch(Buf::pool_arg, 32 * PQ);
  *ya = reinterpret_cast<int32_t*>(*ym + 16 * PQ);
  g_kernels->planes_to_lanes(xt, x + i0 * HW, HW, n, HW);
  g_kernels->maxpool_lanes(*ym, *ya, xt, s);
}

void max_pool2d_forward(float* y, int64_t* indices, const float* x, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  const double work = pool_work(s);
  if (lanes_pay(s, PoolOp::max_fwd)) {
    plane_groups(s, [&](int64_t i0, int n) {
      float* ym;
      int32_t* ya;
      max_lanes(&ym, &ya, x, i0, n, s);
      g_kernels->transpose(y + i0 * PQ, PQ, ym, 16, PQ, n);
      if (indices)
        for (int l = 0; l < n; ++l)
          for (int64_t j = 0; j < PQ; ++j) indices[(i0 + l) * PQ + j] = ya[j * 16 + l];
    });
    return;
  }
  if (indices) {
    parallel_for(s.N * s.C, work, [&](int64_t i) {
      const float* xp = x + i * HW;
      int64_t* ip = indices + i * PQ;
      if (argmax_fits(s.H, s.W)) {
        int32_t* a = reinterpret_cast<int32_t*>(scratch(Buf::pool_arg, PQ));
        plane_argmax(y + i * PQ, a, xp, s);
        for (int64_t j = 0; j < PQ; ++j) ip[j] = a[j];
        return;
      }
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t a = window_argmax(xp, s, p, q);
          y[i * PQ + p * s.Q + q] = a < 0 ? -INFINITY : xp[a];
          ip[p * s.Q + q] = a;
        }
    });
    return;
  }
  const auto kern = g_kernels->maxpool_plane;
  parallel_for(s.N * s.C, work, [&](int64_t i) { kern(y + i * PQ, x + i * HW, s); });
}

void max_pool2d_backward(float* dx, const float* dy, const float* x, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  if (lanes_pay(s, PoolOp::max_bwd)) {
    plane_groups(s, [&](int64_t i0, int n) {
      float* ym;
      int32_t* ya;
      max_lanes(&ym, &ya, x, i0, n, s);
      for (int l = 0; l < n; ++l) {
        float* d = dx + (i0 + l) * HW;
        const float* g = dy + (i0 + l) * PQ;
        std::fill(d, d + HW, 0.f);
        for (int64_t j = 0; j < PQ; ++j)
          if (ya[j * 16 + l] >= 0) d[ya[j * 16 + l]] += g[j];
      }
    });
    return;
  }
  parallel_for(s.N * s.C, pool_work(s), [&](int64_t i) {
    const float* xp = x + i * HW;
    const float* g = dy + i * PQ;
    float* d = dx + i * HW;
    if (is_2x2(s)) {
      g_kernels->maxpool2x2_bwd_plane(d, g, xp, s.H, s.W, s.P, s.Q);
      return;
    }
    std::fill(d, d + HW, 0.f);
    if (argmax_fits(s.H, s.W)) {
      float* m = scratch(Buf::pool_arg, 2 * PQ);
      int32_t* a = reinterpret_cast<int32_t*>(m + PQ);
      plane_argmax(m, a, xp, s);
      for (int64_t j = 0; j < PQ; ++j)
        if (a[j] >= 0) d[a[j]] += g[j];
      return;
    }
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        const int64_t a = window_argmax(xp, s, p, q);
        if (a >= 0) d[a] += g[p * s.Q + q];
      }
  });
}

void avg_pool2d_forward(float* y, const float* x, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  if (lanes_pay(s, PoolOp::avg_fwd)) {
    through_lanes(y, PQ, x, HW, s.N * s.C, pool_work(s), [&s](float* yt, const float* xt) {
      g_kernels->avgpool_lanes(yt, xt, s);
    });
    return;
  }
  const auto kern = g_kernels->avgpool_plane;
  parallel_for(s.N * s.C, pool_work(s), [&](int64_t i) { kern(y + i * PQ, x + i * HW, s); });
}

void avg_pool2d_backward(float* dx, const float* dy, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  if (lanes_pay(s, PoolOp::avg_bwd)) {
    through_lanes(dx, HW, dy, PQ, s.N * s.C, pool_work(s), [&s](float* dxt, const float* gt) {
      g_kernels->avgpool_bwd_lanes(dxt, gt, s);
    });
    return;
  }
  parallel_for(s.N * s.C, pool_work(s), [&](int64_t i) {
    float* work = scratch(Buf::pool_rows, avgpool_bwd_floats(s));
    g_kernels->avgpool_bwd_plane(dx + i * HW, dy + i * PQ, s, work);
  });
}

// ---- adaptive pooling --------------------------------------------------------------------------

// Adaptive average pooling (not global: one sum of the plane) through the lanes, a group per
// thread at least (1 thread, outputs 2x2, 3x3, 5x5 and 1x4, forced both ways): the forward at
// AVX-512 up to 10x10 (1.8-2.3x at 7x7, 0.8-1.0x at 14x14; at AVX2 0.6-0.7x even at 7x7), the
// backward up to 28x28 at AVX-512 (1.1-11x; 0.4-0.7x at 32x32) and 14x14 with fewer lanes
// (1.0-7.6x; 0.8-1.4x at 28x28).
static bool adaptive_lanes_pay(int64_t planes, int64_t H, int64_t W, bool forward) {
  if (H * W > kMaxLanesPlane) return false;
  if (g_pool_forced) return g_pool_forced == 2;
  const bool wide = g_kernels->lanes == 16;
  if (forward && !wide) return false;
  return H * W <= (forward ? 10 * 10 : wide ? 28 * 28 : 14 * 14) &&
         (planes + 15) / 16 >= get_num_threads();
}

void adaptive_avg_pool2d_forward(float* y, const float* x, int64_t planes, int64_t H, int64_t W,
                                 int64_t P, int64_t Q) {
  if (P == 0 || Q == 0) return;  // an empty output (the row loops below assume Q >= 1)
  if (Q > 1 && adaptive_lanes_pay(planes, H, W, true)) {
    through_lanes(y, P * Q, x, H * W, planes, 2.0 * planes * H * W,
                  [&](float* yt, const float* xt) {
      double* work = reinterpret_cast<double*>(scratch(Buf::pool_work, 32 * W));
      g_kernels->adaptive_avgpool_lanes(yt, xt, H, W, P, Q, work);
    });
    return;
  }
  const auto sum = g_kernels->sum_f64;
  parallel_for(planes, 2.0 * planes * H * W, [&](int64_t i) {
    const float* xp = x + i * H * W;
    float* yp = y + i * P * Q;
    if (Q > 1) {
      double* work = reinterpret_cast<double*>(scratch(Buf::pool_rows, 2 * W));
      g_kernels->adaptive_avgpool_plane(yp, xp, H, W, P, Q, work);
      return;
    }
    if (P == 1) {  // global pooling
      yp[0] = static_cast<float>(sum(xp, H * W) / double(H * W));
      return;
    }
    for (int64_t p = 0; p < P; ++p) {  // whole rows: one contiguous run per window
      const int64_t h0 = adaptive_start(p, H, P), h1 = adaptive_end(p, H, P);
      yp[p] = static_cast<float>(sum(xp + h0 * W, (h1 - h0) * W) / double((h1 - h0) * W));
    }
  });
}

void adaptive_avg_pool2d_backward(float* dx, const float* dy, int64_t planes, int64_t H,
                                  int64_t W, int64_t P, int64_t Q) {
  if (P == 0 || Q == 0) {  // an empty output: no gradient reaches x
    std::fill(dx, dx + planes * H * W, 0.f);
    return;
  }
  if (!(P == 1 && Q == 1) && adaptive_lanes_pay(planes, H, W, false)) {
    through_lanes(dx, H * W, dy, P * Q, planes, 2.0 * planes * H * W,
                  [&](float* dxt, const float* gt) {
      float* work = scratch(Buf::pool_work, 16 * W);
      g_kernels->adaptive_avgpool_bwd_lanes(dxt, gt, H, W, P, Q, work);
    });
    return;
  }
  parallel_for(planes, 2.0 * planes * H * W, [&](int64_t i) {
    // global pooling needs no row buffer (nor the thread-local lookup of one)
    float* work = P == 1 && Q == 1 ? nullptr : scratch(Buf::pool_rows, W);
    g_kernels->adaptive_avgpool_bwd_plane(dx + i * H * W, dy + i * P * Q, H, W, P, Q, work);
  });
}

// argmax of adaptive window (p, q) as window_argmax; windows are never empty. Used only for planes
// too large for adaptive_planes' lane buffer.
static int64_t adaptive_argmax(const float* xp, int64_t H, int64_t W, int64_t P, int64_t Q,
                               int64_t p, int64_t q) {
  const int64_t h0 = adaptive_start(p, H, P), h1 = adaptive_end(p, H, P);
  const int64_t w0 = adaptive_start(q, W, Q), w1 = adaptive_end(q, W, Q);
  int64_t arg = h0 * W + w0;
  float m = xp[arg];
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t w = w0; w < w1; ++w) {
      const float e = xp[h * W + w];
      if (e > m || std::isnan(e)) {
        m = e;
        arg = h * W + w;
      }
    }
  return arg;
}

// Every window of planes [i0, i0 + n) (n <= 16): emit(plane, j, a) with a the flat index of the
// winner of window j = p * Q + q, in window order per plane. The planes go into the vector lanes
// (Buf::pool_rows, 16 * H * W floats) and are pooled there (Buf::pool_arg); planes over 512 x 512
// (a lane buffer over 16 MiB per thread) are scanned window by window.
template <class Emit>
static void adaptive_planes(const float* x, int64_t i0, int n, int64_t H, int64_t W, int64_t P,
                            int64_t Q, Emit&& emit) {
  const int64_t PQ = P * Q;
  if (H * W <= (int64_t(1) << 18)) {
    float* xt = scratch(Buf::pool_rows, 16 * H * W);
    float* ym = scratch(Buf::pool_arg, 32 * PQ);
    int32_t* ya = reinterpret_cast<int32_t*>(ym + 16 * PQ);
    g_kernels->planes_to_lanes(xt, x + i0 * H * W, H * W, n, H * W);
    g_kernels->adaptive_maxpool_lanes(ym, ya, xt, H, W, P, Q);
    for (int l = 0; l < n; ++l)
      for (int64_t j = 0; j < PQ; ++j) emit(i0 + l, j, ya[j * 16 + l]);
    return;
  }
  for (int l = 0; l < n; ++l)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q)
        emit(i0 + l, p * Q + q, adaptive_argmax(x + (i0 + l) * H * W, H, W, P, Q, p, q));
}

void adaptive_max_pool2d_forward(float* y, int64_t* indices, const float* x, int64_t planes,
                                 int64_t H, int64_t W, int64_t P, int64_t Q) {
  const int64_t PQ = P * Q;
  if (PQ == 0) return;  // an empty output
  parallel_for((planes + 15) / 16, 2.0 * planes * H * W, [&](int64_t g) {
    const int n = static_cast<int>(std::min<int64_t>(16, planes - g * 16));
    adaptive_planes(x, g * 16, n, H, W, P, Q, [&](int64_t i, int64_t j, int64_t a) {
      y[i * PQ + j] = x[i * H * W + a];
      if (indices) indices[i * PQ + j] = a;
    });
  });
}

void adaptive_max_pool2d_backward(float* dx, const float* dy, const float* x, int64_t planes,
                                  int64_t H, int64_t W, int64_t P, int64_t Q) {
  const int64_t PQ = P * Q;
  if (PQ == 0) {  // an empty output: no gradient reaches x
    std::fill(dx, dx + planes * H * W, 0.f);
    return;
  }
  parallel_for((planes + 15) / 16, 2.0 * planes * H * W, [&](int64_t g) {
    const int64_t i0 = g * 16;
    const int n = static_cast<int>(std::min<int64_t>(16, planes - i0));
    std::fill(dx + i0 * H * W, dx + (i0 + n) * H * W, 0.f);
    adaptive_planes(x, i0, n, H, W, P, Q, [&](int64_t i, int64_t j, int64_t a) {
      dx[i * H * W + a] += dy[i * PQ + j];
    });
  });
}

// (The two loops below are one shape; a shared helper taking lambdas measured 2x slower.)
int64_t max_unpool2d_forward(float* y, const float* x, const int64_t* idx, int64_t planes,
                             int64_t in, int64_t out) {
  std::vector<int64_t> bad(static_cast<size_t>(planes), -1);  // each plane's first bad entry
  parallel_for(planes, 2.0 * planes * (in + out), [&](int64_t c) {
    float* yc = y + c * out;
    std::fill(yc, yc + out, 0.f);
    const int64_t* ic = idx + c * in;
    const float* xc = x + c * in;
    for (int64_t i = 0; i < in; ++i) {
      const int64_t k = ic[i];
      if (k < 0 || k >= out) {
        bad[c] = c * in + i;
        return;
      }
      yc[k] = xc[i];
    }
  });
  for (int64_t b : bad)
    if (b >= 0) return b;
  return -1;
}

int64_t max_unpool2d_backward(float* dx, const float* dy, const int64_t* idx, int64_t planes,
                              int64_t in, int64_t out) {
  std::vector<int64_t> bad(static_cast<size_t>(planes), -1);
  parallel_for(planes, 2.0 * planes * in, [&](int64_t c) {
    const int64_t* ic = idx + c * in;
    const float* g = dy + c * out;
    for (int64_t i = 0; i < in; ++i) {
      const int64_t k = ic[i];
      if (k < 0 || k >= out) {
        bad[c] = c * in + i;
        return;
      }
      dx[c * in + i] = g[k];
    }
  });
  for (int64_t b : bad)
    if (b >= 0) return b;
  return -1;
}

}  // namespace convkit
