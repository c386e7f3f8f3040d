// softmax / log_softmax over the middle axis of (outer, L, inner), max-subtracted, through the
// kernel table's row routines (the last axis) and column routines (any other: a vector of
// independent columns at a time; gathering each column into a row ran 5x slower than PyTorch).
#include <algorithm>
#include <cmath>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

namespace {

// The columns [c0, c0 + w) of an (L, inner) slab into (or out of) an (L, lanes) buffer.
void cols_in(float* buf, const float* src, int64_t L, int64_t inner, int64_t w, int64_t lanes) {
  for (int64_t l = 0; l < L; ++l) {
    std::copy(src + l * inner, src + l * inner + w, buf + l * lanes);
    std::fill(buf + l * lanes + w, buf + (l + 1) * lanes, 0.f);
  }
}
void cols_out(float* dst, const float* buf, int64_t L, int64_t inner, int64_t w, int64_t lanes) {
  for (int64_t l = 0; l < L; ++l) std::copy(buf + l * lanes, buf + l * lanes + w, dst + l * inner);
}

// fn(off, w) for every chunk of softmax_col_lanes columns (w of them, the last one maybe
// fewer) of each (L, inner) slab, off its first column's offset; items of up to 8 chunks, each
// chunk's rows of a (and b) asked for while the chunk before runs.
template <class Fn>
void column_chunks(int64_t outer, int64_t L, int64_t inner, double cost, const float* a,
                   const float* b, Fn&& fn) {
  constexpr int64_t kPer = 8;
  const int64_t lanes = g_kernels->softmax_col_lanes, chunks = (inner + lanes - 1) / lanes;
  const int64_t runs = (chunks + kPer - 1) / kPer;
  parallel_for(outer * runs, cost * outer * L * inner, [&](int64_t it) {
    const int64_t o = it / runs, ch0 = it % runs * kPer, ch1 = std::min(chunks, ch0 + kPer);
    for (int64_t ch = ch0; ch < ch1; ++ch) {
      const int64_t off = o * L * inner + ch * lanes;
      if (ch + 1 < ch1)
        for (int64_t l = 0; l < L; ++l) {
          __builtin_prefetch(a + off + lanes + l * inner);
          if (b) __builtin_prefetch(b + off + lanes + l * inner);
        }
      fn(off, std::min(lanes, inner - ch * lanes));
    }
  });
}

}  // namespace

// Rows along the last axis one at a time; along another axis (inner > 1) a vector of columns at
// a time (KernelTable::softmax_cols), the last few columns through a zero-padded copy.
void softmax_forward(float* y, const float* x, int64_t outer, int64_t L, int64_t inner, bool log) {
  if (L == 0) return;
  if (inner == 1) {
    parallel_for(outer, 20.0 * outer * L, [&](int64_t o) {
      g_kernels->softmax_row(y + o * L, x + o * L, L, log);
    });
    return;
  }
  const int64_t lanes = g_kernels->softmax_col_lanes;
  column_chunks(outer, L, inner, 20.0, x, nullptr, [&](int64_t off, int64_t w) {
    float* buf = scratch(Buf::softmax_rows, 3 * L * lanes);
    if (w == lanes) {
      g_kernels->softmax_cols(y + off, x + off, buf, L, inner, log);
      return;
    }
    cols_in(buf, x + off, L, inner, w, lanes);
    g_kernels->softmax_cols(buf + L * lanes, buf, buf + 2 * L * lanes, L, lanes, log);
    cols_out(y + off, buf + L * lanes, L, inner, w, lanes);
  });
}

void softmax_backward(float* dx, const float* dy, const float* x, int64_t outer, int64_t L,
                      int64_t inner, bool log) {
  if (L == 0) return;
  if (inner == 1) {
    parallel_for(outer, 30.0 * outer * L, [&](int64_t o) {
      float* tmp = scratch(Buf::softmax_rows, L);
      g_kernels->softmax_row_bwd(dx + o * L, dy + o * L, x + o * L, tmp, L, log);
    });
    return;
  }
  const int64_t lanes = g_kernels->softmax_col_lanes, n = L * lanes;
  column_chunks(outer, L, inner, 30.0, x, dy, [&](int64_t off, int64_t w) {
    float* buf = scratch(Buf::softmax_rows, 5 * n);
    if (w == lanes) {
      g_kernels->softmax_cols_bwd(dx + off, dy + off, x + off, buf, L, inner, log);
      return;
    }
    cols_in(buf, x + off, L, inner, w, lanes);
    cols_in(buf + n, dy + off, L, inner, w, lanes);
    g_kernels->softmax_cols_bwd(buf + 2 * n, buf + n, buf, buf + 3 * n, L, lanes, log);
    cols_out(dx + off, buf + 2 * n, L, inner, w, lanes);
  });
}

// From the output y (KernelTable::softmax_row_bwd_out / softmax_cols_bwd_out): the layers'
// backward, which keeps its forward's output as PyTorch's does.
void softmax_backward_from_output(float* dx, const float* dy, const float* y, int64_t outer,
                                  int64_t L, int64_t inner, bool log) {
  if (L == 0) return;
  if (inner == 1) {
    parallel_for(outer, (log ? 20.0 : 6.0) * outer * L, [&](int64_t o) {
      g_kernels->softmax_row_bwd_out(dx + o * L, dy + o * L, y + o * L, L, log);
    });
    return;
  }
  const int64_t lanes = g_kernels->softmax_col_lanes, n = L * lanes;
  column_chunks(outer, L, inner, log ? 20.0 : 6.0, y, dy, [&](int64_t off, int64_t w) {
    if (w == lanes) {
      g_kernels->softmax_cols_bwd_out(dx + off, dy + off, y + off, L, inner, log);
      return;
    }
    float* buf = scratch(Buf::softmax_rows, 3 * n);
    cols_in(buf, y + off, L, inner, w, lanes);
    cols_in(buf + n, dy + off, L, inner, w, lanes);
    g_kernels->softmax_cols_bwd_out(buf + 2 * n, buf + n, buf, L, lanes, log);
    cols_out(dx + off, buf + 2 * n, L, inner, w, lanes);
  });
}

}  // namespace convkit
