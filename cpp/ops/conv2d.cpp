// conv2d front-end: im2col + the packed GEMM, threaded over independent pieces of the output.
//
// forward   y_n (K, PQ)   = W (K, CRS) * col_n (CRS, PQ)        items: (image, block of PQ columns)
// grad x    gcol (CRS,PQ) = W^T (CRS, K) * dy_n (K, PQ) -> col2im items: (image, group of channels)
// grad w    dW (K, CRS)   = sum_n dy_n (K, PQ) * col_n^T         items: fixed chunks of images,
//                                                                 partials summed in chunk order
// grad b    db[k]         = sum over n, p, q of dy                items: output channels
// Every output element is produced by one item, and the chunking of the weight-gradient reduction
// depends only on N, so any thread count gives the same bits.
#include <algorithm>
#include <cstring>
#include <vector>

#include "convkit/convkit.h"
#include "gemm.h"
#include "parallel.h"

namespace convkit {

void conv2d_out_size(Conv2dShape& s) {
  s.P = (s.H + 2 * s.ph - s.R) / s.sh + 1;
  s.Q = (s.W + 2 * s.pw - s.S) / s.sw + 1;
}

namespace {

// col (CRS, j1 - j0) for output positions j in [j0, j1) of image x (C, H, W)
void im2col(float* col, const float* x, const Conv2dShape& s, int64_t j0, int64_t j1) {
  const int64_t width = j1 - j0;
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        float* dst = col + ((c * s.R + r) * s.S + t) * width;
        int64_t j = j0;
        while (j < j1) {
          const int64_t p = j / s.Q, q0 = j % s.Q;
          const int64_t q1 = std::min(s.Q, q0 + (j1 - j));
          float* d = dst + (j - j0) - q0;  // d[q] is position (p, q)
          const int64_t h = p * s.sh - s.ph + r;
          if (h < 0 || h >= s.H) {
            std::fill(d + q0, d + q1, 0.f);
          } else {
            const float* src = x + (c * s.H + h) * s.W + t - s.pw;  // src[q*sw] is (h, q*sw+t-pw)
            // columns with q*sw + t - pw in [0, W)
            const int64_t a = s.pw - t;
            int64_t lo = a <= 0 ? 0 : (a + s.sw - 1) / s.sw;
            const int64_t b = s.W - 1 + s.pw - t;
            int64_t hi = b < 0 ? 0 : b / s.sw + 1;
            lo = std::min(std::max(lo, q0), q1);
            hi = std::min(std::max(hi, lo), q1);
            std::fill(d + q0, d + lo, 0.f);
            if (s.sw == 1)
              std::memcpy(d + lo, src + lo, sizeof(float) * (hi - lo));
            else
              for (int64_t q = lo; q < hi; ++q) d[q] = src[q * s.sw];
            std::fill(d + hi, d + q1, 0.f);
          }
          j += q1 - q0;
        }
      }
}

// dx (c1 - c0, H, W) = sum of gcol ((c1 - c0) * RS, PQ) scattered back to image positions
void col2im(float* dx, const float* gcol, const Conv2dShape& s, int64_t nch) {
  const int64_t PQ = s.P * s.Q;
  std::fill(dx, dx + nch * s.H * s.W, 0.f);
  for (int64_t c = 0; c < nch; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        const float* src = gcol + ((c * s.R + r) * s.S + t) * PQ;
        const int64_t a = s.pw - t;
        const int64_t lo = std::min(s.Q, a <= 0 ? int64_t(0) : (a + s.sw - 1) / s.sw);
        const int64_t b = s.W - 1 + s.pw - t;
        const int64_t hi = std::max(lo, std::min(s.Q, b < 0 ? int64_t(0) : b / s.sw + 1));
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t h = p * s.sh - s.ph + r;
          if (h < 0 || h >= s.H) continue;
          float* d = dx + (c * s.H + h) * s.W + t - s.pw;
          const float* g = src + p * s.Q;
          if (s.sw == 1)
            for (int64_t q = lo; q < hi; ++q) d[q] += g[q];
          else
            for (int64_t q = lo; q < hi; ++q) d[q * s.sw] += g[q];
        }
      }
}

// Columns of one forward work item: as many as keep col (CRS x width) around 256 KiB.
int64_t column_block(const Conv2dShape& s, int64_t nr) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S;
  int64_t w = (64 * 1024) / std::max<int64_t>(CRS, 1);
  w = std::max<int64_t>(nr, w / nr * nr);
  return std::min(w, PQ);
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, HW = s.H * s.W;
  if (s.N == 0 || s.K == 0 || PQ == 0) return;
  const int64_t bw = column_block(s, g_kernels->nr);
  const int64_t nblk = (PQ + bw - 1) / bw;
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t n = item / nblk, j0 = (item % nblk) * bw, j1 = std::min(PQ, j0 + bw);
    float* yn = y + n * s.K * PQ;
    for (int64_t k = 0; k < s.K; ++k)
      std::fill(yn + k * PQ + j0, yn + k * PQ + j1, b ? b[k] : 0.f);
    if (CRS == 0) return;
    float* col = scratch(2, CRS * (j1 - j0));
    im2col(col, x + n * s.C * HW, s, j0, j1);
    gemm_st(s.K, j1 - j0, CRS, MatView{w, CRS, 1}, MatView{col, j1 - j0, 1}, yn + j0, PQ, true);
  });
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, HW = s.H * s.W, RS = s.R * s.S;
  const int64_t KPQ = s.K * PQ;

  if (db) {
    parallel_for(s.K, 1.0 * s.N * KPQ, [&](int64_t k) {
      double acc = 0.0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* g = dy + n * KPQ + k * PQ;
        double a = 0.0;
        for (int64_t j = 0; j < PQ; ++j) a += g[j];
        acc += a;
      }
      db[k] = static_cast<float>(acc);
    });
  }

  if (dx && s.N > 0 && s.C > 0) {
    // Groups of channels small enough that gcol stays around 1 MiB; at least one item per thread.
    int64_t per = std::max<int64_t>(1, (256 * 1024) / std::max<int64_t>(RS * PQ, 1));
    const int64_t want_groups = (get_num_threads() + s.N - 1) / std::max<int64_t>(s.N, 1);
    per = std::min(per, std::max<int64_t>(1, (s.C + want_groups - 1) / want_groups));
    const int64_t ngrp = (s.C + per - 1) / per;
    parallel_for(s.N * ngrp, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
      const int64_t n = item / ngrp, c0 = (item % ngrp) * per, c1 = std::min(s.C, c0 + per);
      float* dxn = dx + (n * s.C + c0) * HW;
      if (s.K == 0 || PQ == 0) {
        std::fill(dxn, dxn + (c1 - c0) * HW, 0.f);
        return;
      }
      float* gcol = scratch(2, (c1 - c0) * RS * PQ);
      // A = W^T restricted to rows [c0*RS, c1*RS): element (m, k) at w[k*CRS + c0*RS + m]
      gemm_st((c1 - c0) * RS, PQ, s.K, MatView{w + c0 * RS, 1, CRS},
              MatView{dy + n * KPQ, PQ, 1}, gcol, PQ, false);
      col2im(dxn, gcol, s, c1 - c0);
    });
  }

  if (dw) {
    if (s.N == 0 || PQ == 0 || CRS == 0) {
      std::fill(dw, dw + s.K * CRS, 0.f);
      return;
    }
    // Fixed chunks of images (depending on N only); each chunk's partial dW is reduced in order.
    const int64_t nchunk = std::min<int64_t>(s.N, 16);
    const int64_t per = (s.N + nchunk - 1) / nchunk;
    const int64_t nch = (s.N + per - 1) / per;
    std::vector<float> partial(static_cast<size_t>(nch > 1 ? nch * s.K * CRS : 0));
    parallel_for(nch, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t ci) {
      float* out = nch > 1 ? partial.data() + ci * s.K * CRS : dw;
      float* col = scratch(2, CRS * PQ);
      const int64_t n0 = ci * per, n1 = std::min(s.N, n0 + per);
      for (int64_t n = n0; n < n1; ++n) {
        im2col(col, x + n * s.C * HW, s, 0, PQ);
        gemm_st(s.K, CRS, PQ, MatView{dy + n * KPQ, PQ, 1}, MatView{col, 1, PQ}, out, CRS,
                n > n0);
      }
    });
    if (nch > 1) {
      const int64_t total = s.K * CRS;
      const int64_t blk = 4096;
      parallel_for((total + blk - 1) / blk, 1.0 * total * nch, [&](int64_t bi) {
        const int64_t e0 = bi * blk, e1 = std::min(total, e0 + blk);
        for (int64_t e = e0; e < e1; ++e) {
          float a = partial[e];
          for (int64_t ci = 1; ci < nch; ++ci) a += partial[ci * total + e];
          dw[e] = a;
        }
      });
    }
  }
}

}  // namespace convkit
