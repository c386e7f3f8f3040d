// Shared pieces of the conv2d paths: im2col and col2im, padded and phase-split input rows, the
// in-order reduction of per-chunk partial sums.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {

// col rows (c, r, t) for positions [j0, j1) of image x (C, H, W); row k starts at col + k * ld
void im2col(float* col, int64_t ld, const float* x, const Conv2dShape& s, int64_t j0, int64_t j1) {
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        float* dst = col + ((c * s.R + r) * s.S + t) * ld - j0;
        const float* plane = x + c * s.H * s.W;
        for_each_run(s, r, t, j0, j1, [&](int64_t j, int64_t q0, int64_t q1, int64_t h,
                                          int64_t lo, int64_t hi) {
          float* d = dst + j - q0;  // d[q] is position (p, q)
          if (h < 0 || h >= s.H) {
            std::fill(d + q0, d + q1, 0.f);
            return;
          }
          // src[q * sw] is input (h, q*sw + t*dw - pw)
          const float* src = plane + h * s.W + t * s.dw - s.pw;
          std::fill(d + q0, d + lo, 0.f);
          if (s.sw == 1)
            std::memcpy(d + lo, src + lo, sizeof(float) * (hi - lo));
          else
            for (int64_t q = lo; q < hi; ++q) d[q] = src[q * s.sw];
          std::fill(d + hi, d + q1, 0.f);
        });
      }
}

// The NR-column panels (full CRS depth) of col for positions [j0, j1) of image x.
void im2col_panels(float* dst, const float* x, const Conv2dShape& s, int64_t j0, int64_t j1,
                   int NR) {
  const int64_t CRS = s.C * s.R * s.S;
  for (int64_t pj = j0; pj < j1; pj += NR, dst += CRS * NR) {
    const int64_t pe = std::min<int64_t>(j1, pj + NR);
    im2col(dst, NR, x, s, pj, pe);
    if (pe - pj < NR)
      for (int64_t k = 0; k < CRS; ++k) std::fill(dst + k * NR + (pe - pj), dst + (k + 1) * NR, 0.f);
  }
}

// dx (nch, H, W) += gcol rows (c, r, t) of positions [j0, j1); row k starts at gcol + k * ld.
// (The whole image at once goes through KernelTable::col2im_plane instead, which overwrites.)
void col2im(float* dx, const float* gcol, int64_t ld, const Conv2dShape& s, int64_t nch,
            int64_t j0, int64_t j1) {
  for (int64_t c = 0; c < nch; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        const float* src = gcol + ((c * s.R + r) * s.S + t) * ld - j0;
        float* plane = dx + c * s.H * s.W;
        for_each_run(s, r, t, j0, j1, [&](int64_t j, int64_t q0, int64_t, int64_t h, int64_t lo,
                                          int64_t hi) {
          if (h < 0 || h >= s.H) return;
          const float* g = src + j - q0;
          float* d = plane + h * s.W + t * s.dw - s.pw;
          if (s.sw == 1)
            for (int64_t q = lo; q < hi; ++q) d[q] += g[q];
          else
            for (int64_t q = lo; q < hi; ++q) d[q * s.sw] += g[q];
        });
      }
}

// Columns per block so that `bytes_per_col` times the width stays near `budget` bytes.
int64_t block_cols(int64_t bytes_per_col, int64_t budget, int64_t total, int NR) {
  int64_t w = budget / std::max<int64_t>(bytes_per_col, 1);
  w = std::max<int64_t>(NR, w / NR * NR);
  return std::min(w, total);
}

// out[e] = parts[0][e] + parts[1][e] + ... in that order (parts are `total` apart)
void reduce_in_order(float* out, const float* parts, int64_t nparts, int64_t total) {
  const int64_t blk = 4096;
  parallel_for((total + blk - 1) / blk, 4.0 * total * nparts, [&](int64_t bi) {
    const int64_t e0 = bi * blk, e1 = std::min(total, e0 + blk);
    for (int64_t e = e0; e < e1; ++e) {
      float a = parts[e];
      for (int64_t i = 1; i < nparts; ++i) a += parts[i * total + e];
      out[e] = a;
    }
  });
}

// Rows h0, h0 + hstep, ... (n of them) of an (H, W) plane split into their sw column phases
// (KernelTable::phase_split_rows): row i at dst + i * dstep, phase f at + f * fstride; rows
// outside [0, H) all zeros.
void split_rows(float* dst, int64_t dstep, int64_t fstride, const float* plane, int64_t H,
                int64_t W, int64_t h0, int64_t hstep, int64_t n, int64_t pw, int64_t sw,
                int64_t Wq) {
  const auto split = g_kernels->phase_split_rows;
  const int64_t a = h0 >= 0 ? 0 : std::min(n, (-h0 + hstep - 1) / hstep);   // first inside
  const int64_t b = std::max(a, H <= h0 ? a : std::min(n, (H - h0 + hstep - 1) / hstep));
  split(dst, dstep, fstride, nullptr, 0, a, W, pw, sw, Wq);
  split(dst + a * dstep, dstep, fstride, plane + (h0 + a * hstep) * W, hstep * W, b - a, W, pw,
        sw, Wq);
  split(dst + b * dstep, dstep, fstride, nullptr, 0, n - b, W, pw, sw, Wq);
}

// Rows h0 .. h0 + nr - 1 of an (H, W) plane into dst, Wd floats apart: each row as pw zeros,
// the W values, zeros up to Wd; rows outside [0, H) all zeros.
void pad_rows(float* dst, int64_t Wd, const float* plane, int64_t H, int64_t W, int64_t h0,
              int64_t nr, int64_t pw) {
  if (pw < 0 || pw + W > Wd) {  // (columns cut off: the general split)
    split_rows(dst, Wd, 0, plane, H, W, h0, 1, nr, pw, 1, Wd);
    return;
  }
  // Inline, without a kernel call a row: on small planes these copies ran ~18 ns a row, a fifth
  // of a batch-1 (1, 64, 4, 4) 3x3 layer. Short rows (4 to 64 floats) go in moves of 4 or 8
  // floats of a constant size (the last one overlapping the one before), after one run of
  // zeros over all nr rows: a library call for each row's copy and for each gap took a tenth of
  // a batch-1 (1, 64, 8, 8) 3x3 layer.
  const int64_t a = std::clamp<int64_t>(-h0, 0, nr), b = std::clamp<int64_t>(H - h0, a, nr);
  if (W >= 4 && W <= 64) {
    std::memset(dst, 0, sizeof(float) * nr * Wd);
    const int64_t v = W >= 8 ? 8 : 4;
    for (int64_t i = a; i < b; ++i) {
      float* d = dst + i * Wd + pw;
      const float* r = plane + (h0 + i) * W;
      if (v == 8) {
        for (int64_t j = 0; j + 8 < W; j += 8) std::memcpy(d + j, r + j, 8 * sizeof(float));
        std::memcpy(d + W - 8, r + W - 8, 8 * sizeof(float));
      } else {
        std::memcpy(d, r, 4 * sizeof(float));
        std::memcpy(d + W - 4, r + W - 4, 4 * sizeof(float));
      }
    }
    return;
  }
  // The zeros between two rows inside are one run.
  std::memset(dst, 0, sizeof(float) * (a * Wd + (b > a ? pw : 0)));
  for (int64_t i = a; i < b; ++i) {
    float* d = dst + i * Wd + pw;
    std::memcpy(d, plane + (h0 + i) * W, sizeof(float) * W);
    // this row's right padding and the next row's left (or the rest of the zero rows after)
    const int64_t gap = i + 1 < b ? Wd - W : Wd - pw - W + (nr - b) * Wd;
    std::memset(d + W, 0, sizeof(float) * gap);
  }
  if (b == a) std::memset(dst + a * Wd, 0, sizeof(float) * (nr - a) * Wd);
}

// x zero-padded to (N, C, H + 2ph, W + 2pw) in scratch slot 4, then `slack` zeros (x itself when
// there is no padding).
const float* padded_input(const float* x, const Conv2dShape& s, int64_t slack) {
  if (!s.ph && !s.pw) return x;
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp;
  float* buf = scratch(Buf::padded_input, s.N * s.C * plane + slack);
  parallel_for(s.N * s.C, kCopyCost * s.N * s.C * plane, [&](int64_t i) {
    pad_rows(buf + i * plane, Wp, x + i * s.H * s.W, s.H, s.W, -s.ph, Hp, s.pw);
  });
  std::fill(buf + s.N * s.C * plane, buf + s.N * s.C * plane + slack, 0.f);
  return buf;
}

// NR-column panels of col^T for the weight gradient: rows are output positions [j0, j0 + kc),
// columns are taps crs in [c0, c0 + n); element (j, crs) = xpad[off(crs) + p*sh*Wp + q*sw].
// Panels are pstride rows apart (0: kc), so that a panel can be filled in runs of positions.
// Read straight from the padded image: im2col and the transposing pack in one pass, a panel
// row (NR taps of one position) at a time, so that the stores are contiguous (a column at a
// time, every store went to another cache line).
void pack_colT(float* dst, const float* xpad, const Conv2dShape& s, int64_t j0, int64_t kc,
               int64_t c0, int64_t n, int NR, int64_t pstride) {
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, RS = s.R * s.S;
  const float* base[64];  // each tap's x at output position (0, 0) (the ISAs' NR: 8 to 32)
  const auto rows16 = NR % 16 == 0 ? g_kernels->colT_rows16 : nullptr;
  for (int64_t jp = 0; jp < n; jp += NR, dst += (pstride ? pstride : kc) * NR) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, n - jp));
    for (int jj = 0; jj < nr; ++jj) {
      const int64_t crs = c0 + jp + jj, c = crs / RS, r = (crs % RS) / s.S, t = crs % s.S;
      base[jj] = xpad + c * Hp * Wp + r * Wp + t;
    }
    for (int64_t j = j0; j < j0 + kc;) {
      const int64_t p = j / s.Q, q0 = j - p * s.Q, q1 = std::min(s.Q, q0 + (j0 + kc - j));
      const int64_t row = p * s.sh * Wp;
      if (rows16) {  // 16 positions at a time, in registers
        for (int64_t q = q0; q < q1; q += 16)
          rows16(dst + (j - j0 + q - q0) * NR, NR, base, nr, row + q * s.sw, s.sw,
                 static_cast<int>(std::min<int64_t>(16, q1 - q)));
        j += q1 - q0;
        continue;
      }
      for (int64_t q = q0; q < q1; ++q) {
        float* d = dst + (j - j0 + q - q0) * NR;
        const int64_t o = row + q * s.sw;
        for (int jj = 0; jj < nr; ++jj) d[jj] = base[jj][o];
        for (int jj = nr; jj < NR; ++jj) d[jj] = 0.f;
      }
      j += q1 - q0;
    }
  }
}

// (On one thread, the pack of a batch-1 (1, 256, 14, 14) -> 512 stride-2 layer's 4.7 MB of
// weights was 13 % of its 2-thread samples, the other thread idle.)
void pack_weights(float* dst, MatView A, int64_t m, int64_t kc, int MR) {
  parallel_for((m + MR - 1) / MR, kCopyCost * m * kc, [&](int64_t p) {
    pack_a(dst + p * MR * kc, A, p * MR, std::min<int64_t>(MR, m - p * MR), 0, kc, MR);
  });
}

bool all_finite(const float* v, int64_t n) {
  // Chunks in parallel (KernelTable::all_finite each): the weights of a deep layer (2.4 M
  // floats) took 8 % of its forward.
  constexpr int64_t kChunk = 1 << 16;
  std::atomic<bool> ok{true};
  parallel_for((n + kChunk - 1) / kChunk, kCopyCost * n, [&](int64_t c) {
    if (!g_kernels->all_finite(v + c * kChunk, std::min(kChunk, n - c * kChunk)))
      ok.store(false, std::memory_order_relaxed);
  });
  return ok.load();
}

}  // namespace conv
}  // namespace convkit
