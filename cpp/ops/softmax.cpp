// softmax / log_softmax over the middle axis of (outer, L, inner), max-subtracted. Rows along a
// non-last axis (inner > 1) are gathered into a contiguous buffer first, so one pair of row
// routines (KernelTable::softmax_row / softmax_row_bwd, vectorised per ISA) serves every axis.
#include <algorithm>
#include <cmath>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

namespace {

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
      g_kernels->softmax_row(yr, xr, L, log);
    } else {
      float* buf = scratch(Buf::softmax_rows, 2 * L);
      gather(buf, xr, L, inner);
      g_kernels->softmax_row(buf + L, buf, L, log);
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
      g_kernels->softmax_row_bwd(dx + off, dy + off, x + off, tmp, L, log);
    } else {
      float* buf = scratch(Buf::softmax_rows, 4 * L);
      gather(buf, x + off, L, inner);
      gather(buf + L, dy + off, L, inner);
      g_kernels->softmax_row_bwd(buf + 2 * L, buf + L, buf, buf + 3 * L, L, log);
      scatter(dx + off, buf + 2 * L, L, inner);
    }
  });
}

}  // namespace convkit
