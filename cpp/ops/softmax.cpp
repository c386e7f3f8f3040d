// softmax / log_softmax over the middle axis of (outer, L, inner), max-subtracted. Rows along a
// non-last axis (inner > 1) are gathered into a contiguous buffer first, so one row routine
// (vectorised exp through the kernel table) serves every axis.
#include <algorithm>
#include <cmath>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

namespace {

// y = softmax(x) or log_softmax(x) over one contiguous row of length L
void row_forward(float* y, const float* x, int64_t L, bool log) {
  float m = -INFINITY;
  for (int64_t i = 0; i < L; ++i) m = x[i] > m ? x[i] : m;
  const double sum = g_kernels->exp_shift_sum(y, x, m, L);
  if (log) {
    // (x - m) - log(sum) in double, rounded once: rounding m + log(sum) to float first lost up
    // to half an ulp of m (x = [1000, 993.7758] gave -1.953125e-3 for -1.97898e-3)
    const double ls = std::log(sum), md = m;
    for (int64_t i = 0; i < L; ++i) y[i] = static_cast<float>((double(x[i]) - md) - ls);
  } else {
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < L; ++i) y[i] *= inv;
  }
}

// dx for one row, given dy and x; `tmp` has room for L floats. Written around the row's largest
// entry k (y_k may be close to 1) so that no term cancels catastrophically:
//   softmax:     dx_i = y_i ((dy_i - dy_k) - sum_j y_j (dy_j - dy_k))
//   log_softmax: dx_i = dy_i - y_i sum_j dy_j, and for i = k: dy_k (1 - y_k) - y_k sum_{j!=k} dy_j
// with 1 - y_k = sum_{j!=k} e_j / sum_j e_j taken from the small terms.
void row_backward(float* dx, const float* dy, const float* x, float* tmp, int64_t L, bool log) {
  int64_t k = 0;
  for (int64_t i = 1; i < L; ++i) k = x[i] > x[k] ? i : k;
  const double sum = g_kernels->exp_shift_sum(tmp, x, x[k], L);  // tmp[k] == 1
  const double inv = 1.0 / sum;
  if (log) {
    double rest = 0.0;  // sum of dy over j != k
    for (int64_t i = 0; i < L; ++i) rest += i == k ? 0.0 : double(dy[i]);
    const double total = rest + dy[k];
    for (int64_t i = 0; i < L; ++i) dx[i] = static_cast<float>(dy[i] - tmp[i] * inv * total);
    dx[k] = static_cast<float>(dy[k] * ((sum - 1.0) * inv) - inv * rest);
  } else {
    const double c = dy[k];
    double dot = 0.0;
    for (int64_t i = 0; i < L; ++i) dot += tmp[i] * (dy[i] - c);
    dot *= inv;
    for (int64_t i = 0; i < L; ++i) dx[i] = static_cast<float>(tmp[i] * inv * ((dy[i] - c) - dot));
  }
}

void gather(float* dst, const float* src, int64_t L, int64_t inner) {
  for (int64_t l = 0; l < L; ++l) dst[l] = src[l * inner];
}
void scatter(float* dst, const float* src, int64_t L, int64_t inner) {
  for (int64_t l = 0; l < L; ++l) dst[l * inner] = src[l];
}

}  // namespace

void softmax_forward(float* y, const float* x, int64_t outer, int64_t L, int64_t inner, bool log) {
  if (L == 0) return;
  parallel_for(outer * inner, 20.0 * outer * L * inner, [&](int64_t row) {
    const int64_t o = row / inner, i = row % inner;
    const float* xr = x + o * L * inner + i;
    float* yr = y + o * L * inner + i;
    if (inner == 1) {
      row_forward(yr, xr, L, log);
    } else {
      float* buf = scratch(Buf::softmax_rows, 2 * L);
      gather(buf, xr, L, inner);
      row_forward(buf + L, buf, L, log);
      scatter(yr, buf + L, L, inner);
    }
  });
}

void softmax_backward(float* dx, const float* dy, const float* x, int64_t outer, int64_t L,
                      int64_t inner, bool log) {
  if (L == 0) return;
  parallel_for(outer * inner, 30.0 * outer * L * inner, [&](int64_t row) {
    const int64_t o = row / inner, i = row % inner;
    const int64_t off = o * L * inner + i;
    if (inner == 1) {
      float* tmp = scratch(Buf::softmax_rows, L);
      row_backward(dx + off, dy + off, x + off, tmp, L, log);
    } else {
      float* buf = scratch(Buf::softmax_rows, 4 * L);
      gather(buf, x + off, L, inner);
      gather(buf + L, dy + off, L, inner);
      row_backward(buf + 2 * L, buf + L, buf, buf + 3 * L, L, log);
      scatter(dx + off, buf + 2 * L, L, inner);
    }
  });
}

}  // namespace convkit
