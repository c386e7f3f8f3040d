// conv2d front-end. Every path is a GEMM over the implicit im2col matrix col (CRS x PQ), fed
// to the ISA's micro-kernels without materialising col where it can be avoided:
//
// forward, 3x3,       Winograd F(2x2, 3x3): 16 GEMMs over transformed 4x4 input patches
//   stride 1, 16+ ch  (winograd_forward); a non-finite output falls back to the direct sum
// forward, 3x3,       the phase-split sum with Winograd F(2, 2)-style parts: 25 products per
//   stride 2, 16+ ch  2x2 tile instead of 36, as 9 GEMMs (winograd_s2_forward); same fallback
// forward, 5x5,       Winograd F(2x2, 5x5), 16 images in the vector lanes (winograd5_forward),
//   stride 1, N>=16   when its cost model says it pays; same fallback
// forward, stride<=4  y_n = W * col_n with col_n's rows read in place from the (row-block-wise
//                     zero-padded, and for strides split into row and column phases) image on
//                     a "wide" grid of positions, or by output row (direct_forward); narrow
//                     outputs put 16 output channels in the vector lanes instead (kvec_forward)
// forward, stride>4   col_n written straight into packed NR-column panels (im2col_panels)
// grad x, stride 1    the stride-1 convolution of dy with flipped, transposed weights, when the
//                     padding is "same"-like and C fills the tiles; else
// grad x, few inputs  rows of dx straight from dy, output columns in the lanes (conv_dx_rows)
// grad x, stride 1,   16 images in the vector lanes, each dx row summed over just the taps
//   N>=16, C<=8       that reach dy (conv_dx_lanes)
// grad x              gcol = W^T * dy_n with dy_n's rows read in place, scattered back one dx
//                     plane at a time (col2im_plane), items (image, channel group)
// grad w              dot products of dy rows with input rows (zero-padded, or split into
//                     row and column phases when strided) in register tiles of (channels x
//                     taps), over fixed, L2-sized chunks of images (dw_dot, conv_dw_tile);
//                     narrow outputs put 16 output channels in the lanes (dw_kvec); ISAs
//                     without those kernels: dW = sum_n dy_n * col_n^T, col_n^T packed
// grad b              sums of dy per output channel
//
// Every output element is produced by one work item, reduction blocking depends only on the
// shape, and partial sums over image chunks are added in chunk order: any thread count gives
// the same bits. The path taken depends on the shape and the ISA, never on the thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
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

// Longest reduction the direct forward runs in one pass (its B rows: 128 bytes each per tile).
constexpr int64_t kDirectMaxKc = 2048;

// parallel_for's work estimate (in flops) per float moved by a copy: a copy is memory-bound, and
// one float moved costs about as much time as 16 flops of a multiply kernel.
constexpr double kCopyCost = 16.0;

// For tap (r, t) and output positions j in [j0, j1): calls f(j, q0, q1, h, lo, hi) for each run
// of one output row p = j / Q, covering q in [q0, q1); h is the input row (may be outside
// [0, H)), and q in [lo, hi) are the columns whose input column q*sw + t - pw lies inside [0, W).
template <class F>
inline void for_each_run(const Conv2dShape& s, int64_t r, int64_t t, int64_t j0, int64_t j1,
                         F&& f) {
  const int64_t a = s.pw - t, b = s.W - 1 + s.pw - t;
  const int64_t lo_all = a <= 0 ? 0 : (a + s.sw - 1) / s.sw;
  const int64_t hi_all = b < 0 ? 0 : b / s.sw + 1;
  int64_t p = j0 / s.Q, q0 = j0 - p * s.Q;  // one division; later runs start at q = 0
  for (int64_t j = j0; j < j1; ++p, q0 = 0) {
    const int64_t q1 = std::min(s.Q, q0 + (j1 - j));
    const int64_t lo = std::min(std::max(lo_all, q0), q1);
    const int64_t hi = std::min(std::max(hi_all, lo), q1);
    f(j, q0, q1, p * s.sh - s.ph + r, lo, hi);
    j += q1 - q0;
  }
}

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
          const float* src = plane + h * s.W + t - s.pw;  // src[q * sw] is input (h, q*sw+t-pw)
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
          float* d = plane + h * s.W + t - s.pw;
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
  split_rows(dst, Wd, 0, plane, H, W, h0, 1, nr, pw, 1, Wd);
}

// x zero-padded to (N, C, H + 2ph, W + 2pw) in scratch slot 4 (x itself when there is no padding).
const float* padded_input(const float* x, const Conv2dShape& s) {
  if (!s.ph && !s.pw) return x;
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp;
  float* buf = scratch(4, s.N * s.C * plane);
  parallel_for(s.N * s.C, kCopyCost * s.N * s.C * plane, [&](int64_t i) {
    pad_rows(buf + i * plane, Wp, x + i * s.H * s.W, s.H, s.W, -s.ph, Hp, s.pw);
  });
  return buf;
}

// NR-column panels of col^T for the weight gradient: rows are output positions [j0, j0 + kc),
// columns are taps crs in [c0, c0 + n); element (j, crs) = xpad[off(crs) + p*sh*Wp + q*sw].
// Read straight from the padded image: im2col and the transposing pack in one pass.
void pack_colT(float* dst, const float* xpad, const Conv2dShape& s, int64_t j0, int64_t kc,
               int64_t c0, int64_t n, int NR) {
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, RS = s.R * s.S;
  for (int64_t jp = 0; jp < n; jp += NR, dst += kc * NR) {
    const int64_t nr = std::min<int64_t>(NR, n - jp);
    for (int64_t jj = 0; jj < nr; ++jj) {
      const int64_t crs = c0 + jp + jj, c = crs / RS, r = (crs % RS) / s.S, t = crs % s.S;
      const float* base = xpad + c * Hp * Wp + r * Wp + t;
      float* d = dst + jj;
      int64_t j = j0;
      while (j < j0 + kc) {
        const int64_t p = j / s.Q, q0 = j - p * s.Q, q1 = std::min(s.Q, q0 + (j0 + kc - j));
        const float* src = base + p * s.sh * Wp;
        for (int64_t q = q0; q < q1; ++q) d[(j - j0 + q - q0) * NR] = src[q * s.sw];
        j += q1 - q0;
      }
    }
    for (int64_t jj = nr; jj < NR; ++jj)
      for (int64_t k = 0; k < kc; ++k) dst[k * NR + jj] = 0.f;
  }
}

// Convolution on a "wide" grid of positions j' = p * Wq + q, where row (c, r, t) of the implicit
// im2col is a contiguous run base + off(c, r, t) + j' that the micro-kernel reads in place (no
// im2col at all). Columns q >= Q of the wide grid are computed and dropped: the ISA's
// compacting store (gemm_direct_wide) writes the rest straight into y, else tiles go to a
// buffer that is copied out; when Wq == Q the wide grid is the output and tiles land in y
// directly. When the dropped columns would waste more than tiles kept within each output row,
// tiles go by row.
//   Stride 1: the zero-padded input itself, Wq = Wp = W + 2pw, off = c*plane + r*Wp + t. Each
//   item pads just the input rows it reads into its own buffer (hot in cache when the kernel
//   reads it); without padding the kernel reads x itself.
//   Stride (sh, sw): each item splits the input rows it reads into sh row phases and sw column
//   phases (Wq = ceil(Wp / sw) wide): buffer row l of phase (fr, fc) holds columns fc, fc + sw,
//   ... of input row hbase + l * sh + fr (hbase = p0 * sh - ph). Tap (r, t) of output row
//   p0 + pl then sits in phase (r % sh, t % sw) at row pl + r / sh, column q + t / sw: rows and
//   columns adjacent again, and each input row copied once.
void direct_forward(float* y, const float* x, const float* apack, const float* b,
                    const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const bool unit = s.sh == 1 && s.sw == 1;
  const int64_t Wp = s.W + 2 * s.pw, Wq = (Wp + s.sw - 1) / s.sw;
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q;
  // Output rows per item: the wide tile buffer K x rows x Wq stays near 256 KiB, and there are
  // enough items for the threads.
  int64_t rows = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(s.K * Wq, 1));
  if (!unit)  // and the phase-split input rows near 512 KiB
    rows = std::min(rows, std::max<int64_t>(1, (128 * 1024) / (s.C * s.sh * s.sw * Wq) - (s.R - 1) / s.sh));
  const int64_t want_blocks = (2 * get_num_threads() + s.N - 1) / s.N;  // per image
  rows = std::min({rows, s.P, std::max<int64_t>(1, (s.P + want_blocks - 1) / want_blocks)});
  const int64_t nblk = (s.P + rows - 1) / rows;
  rows = (s.P + nblk - 1) / nblk;  // blocks as even as they come
  const bool own = !unit || s.ph || s.pw;  // items build their own input buffer
  // floats per input channel in the buffer the kernel reads
  const int64_t L = rows + (s.R - 1) / s.sh;  // buffer rows per phase (strided)
  const int64_t plane = !unit ? s.sh * s.sw * L * Wq : own ? (rows + s.R - 1) * Wp : s.H * s.W;
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t)
        off[(c * s.R + r) * s.S + t] =
            unit ? c * plane + r * Wp + t
                 : c * plane + ((r % s.sh) * s.sw + t % s.sw) * L * Wq + (r / s.sh) * Wq + t / s.sw;
  const int64_t* offp = off.data();

  const bool exact = Wq == s.Q;
  // One pass over the reduction while a tile's B rows stay L2-sized (measured 5 % faster than
  // 256-deep passes on 7x7 layers: no C reloads), else the GEMM's blocks.
  const int64_t kcmax = CRS <= kDirectMaxKc ? CRS : gemm_kc(CRS);
  const int MR = kt.mr, NR = kt.nr;
  // Tiles along the wide grid waste its Wq - Q dropped columns and need a copy-out; tiles kept
  // within one output row waste the part of the last tile past Q but store into y directly.
  // Take whichever computes fewer useless columns (the copy-out counted as 3 %).
  // With a compacting store (one pass over the reduction) the wide tiles go straight into y.
  const bool compact = !exact && kt.gemm_direct_wide && kcmax == CRS;
  const int64_t width_max = (rows - 1) * Wq + s.Q;
  const double eff_wide =
      1.0 * rows * s.Q / round_up(width_max, NR) * (exact || compact ? 1.0 : 0.97);
  const double eff_row = 1.0 * s.Q / round_up(s.Q, NR);
  const bool by_row = !exact && eff_row >= eff_wide;
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t n = item / nblk, p0 = (item % nblk) * rows, p1 = std::min(s.P, p0 + rows);
    const float* xn = x + n * s.C * s.H * s.W;
    const float* base = xn + p0 * Wp;
    if (own) {
      float* buf = scratch(6, s.C * plane);
      if (unit) {  // input rows p0 - ph .. p1 - 1 + R - 1 - ph, zero outside the image
        for (int64_t c = 0; c < s.C; ++c)
          pad_rows(buf + c * plane, Wp, xn + c * s.H * s.W, s.H, s.W, p0 - s.ph,
                   p1 - p0 + s.R - 1, s.pw);
      } else {  // input rows hbase .. into their (row, column) phases
        const int64_t hbase = p0 * s.sh - s.ph, nrows = (p1 - p0 - 1) * s.sh + s.R;
        for (int64_t c = 0; c < s.C; ++c)
          for (int64_t fr = 0; fr < std::min(s.sh, nrows); ++fr)  // input rows hbase + fr + l*sh
            split_rows(buf + c * plane + fr * s.sw * L * Wq, Wq, L * Wq, xn + c * s.H * s.W, s.H,
                       s.W, hbase + fr, s.sh, (nrows - fr + s.sh - 1) / s.sh, s.pw, s.sw, Wq);
      }
      base = buf;
    }
    const int64_t width = (p1 - p0 - 1) * Wq + s.Q;
    float* yn = y + n * s.K * PQ;
    // one NR-wide tile of the grid: columns [jr, jr + nr) of buffer `base`, output tile c
    auto tile = [&](int64_t pc, int64_t kc, int64_t jr, int nr, float* c, int64_t ldc) {
      for (int64_t ir = 0; ir < s.K; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, s.K - ir));
        kt.gemm_direct(kc, apack + ir * CRS + pc * MR, base + jr, offp + pc, c + ir * ldc, ldc,
                       mr, nr, pc > 0, (pc == 0 && b) ? b + ir : nullptr);
      }
    };
    if (by_row) {  // tiles within one output row, stored straight into y
      for (int64_t pc = 0; pc < CRS; pc += kcmax) {
        const int64_t kc = std::min(kcmax, CRS - pc);
        for (int64_t p = p0; p < p1; ++p)
          for (int64_t q0 = 0; q0 < s.Q; q0 += NR)
            tile(pc, kc, (p - p0) * Wq + q0, static_cast<int>(std::min<int64_t>(NR, s.Q - q0)),
                 yn + p * s.Q + q0, PQ);
      }
      return;
    }
    if (compact) {
      for (int64_t jr = 0; jr < width; jr += NR)
        for (int64_t ir = 0; ir < s.K; ir += MR)
          kt.gemm_direct_wide(CRS, apack + ir * CRS, base + jr, offp, yn + ir * PQ + p0 * s.Q, PQ,
                              static_cast<int>(std::min<int64_t>(MR, s.K - ir)),
                              static_cast<int>(std::min<int64_t>(NR, width - jr)),
                              b ? b + ir : nullptr, jr, Wq, s.Q);
      return;
    }
    const int64_t ldc = exact ? PQ : width;
    float* cw = exact ? yn + p0 * s.Q : scratch(2, s.K * width);
    for (int64_t pc = 0; pc < CRS; pc += kcmax) {
      const int64_t kc = std::min(kcmax, CRS - pc);
      for (int64_t jr = 0; jr < width; jr += NR)
        tile(pc, kc, jr, static_cast<int>(std::min<int64_t>(NR, width - jr)), cw + jr, ldc);
    }
    if (!exact)
      for (int64_t k = 0; k < s.K; ++k)
        kt.phase_split_rows(yn + k * PQ + p0 * s.Q, s.Q, 0, cw + k * width, Wq, p1 - p0, s.Q, 0,
                            1, s.Q);
  });
}

// The GEMMs of a Winograd-style item: M_e (K x nt, rows Tb apart, at m + e * K * Tb) = U_e V_e
// for e < ne, where U_e is packed in MR-row panels at up + Kp * base[e] (depth[e] columns) and
// V_e's rows are Tb apart from v + base[e] * Tb (voff[i] = i * Tb).
void winograd_gemms(float* m, const float* up, const float* v, const int64_t* base,
                    const int64_t* depth, int ne, int64_t K, int64_t Tb, int64_t nt,
                    const int64_t* voff) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t Kp = round_up(K, MR);
  for (int e = 0; e < ne; ++e) {
    const int64_t kcmax = gemm_kc(depth[e]);
    for (int64_t pc = 0; pc < depth[e]; pc += kcmax) {
      const int64_t kc = std::min(kcmax, depth[e] - pc);
      for (int64_t jr = 0; jr < nt; jr += NR)
        for (int64_t ir = 0; ir < K; ir += MR)
          kt.gemm_direct(kc, up + Kp * base[e] + ir * depth[e] + pc * MR, v + base[e] * Tb + jr,
                         voff + pc, m + (e * K + ir) * Tb + jr, Tb,
                         static_cast<int>(std::min<int64_t>(MR, K - ir)),
                         static_cast<int>(std::min<int64_t>(NR, nt - jr)), pc > 0, nullptr);
    }
  }
}

// Output transform of tile rows [ty0, ty1) of image n by `out_row` (KernelTable::wino_out_row
// or wino_s2_out_row) from M (e stride K * Tb); false if an output is NaN or infinite.
bool winograd_out_rows(bool (*out_row)(float*, float*, const float*, int64_t, int64_t, int64_t,
                                       float),
                       float* y, const float* m, const float* b, const Conv2dShape& s, int64_t n,
                       int64_t ty0, int64_t ty1, int64_t TX, int64_t Tb) {
  bool ok = true;
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t ty = ty0; ty < ty1; ++ty) {
      float* yr = y + ((n * s.K + k) * s.P + 2 * ty) * s.Q;
      ok &= out_row(yr, 2 * ty + 1 < s.P ? yr + s.Q : nullptr, m + k * Tb + (ty - ty0) * TX,
                    s.K * Tb, TX, s.Q, b ? b[k] : 0.f);
    }
  return ok;
}

// 3x3, stride 1, enough channels: Winograd F(2x2, 3x3). Each 2x2 block of outputs (a tile)
// comes from a 4x4 input patch d as A^T [(G g G^T) . (B^T d B)] A, so the 36 multiplies per
// (tile, c, k) of the direct form become 16, done as 16 GEMMs (K x C by C x tiles), one per
// entry e of the 4x4 transformed patch. Items are (image, block of tile rows): each pads its
// input rows, transforms them into V[e] (C x tiles, rows read in place by the direct
// micro-kernel), multiplies, and transforms M[e] (K x tiles) back into y. The blocking depends
// on the shape only: the same bits for any thread count. Returns false if an output came out
// NaN or infinite: the transforms add and subtract input values, so an Inf in x can give NaN
// where the definition gives Inf, and the caller then recomputes the direct way.
bool winograd_forward(float* y, const float* x, const float* w, const float* b,
                      const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, PQ = s.P * s.Q;
  const int MR = kt.mr;
  // U[e] = G g G^T for every (k, c), then packed into MR-row panels per e
  const int64_t Kp = round_up(s.K, MR);
  float* ut = scratch(7, 16 * s.K * s.C);  // not 5: the input-gradient path passes w from there
  parallel_for(s.K * s.C, 100.0 * s.K * s.C, [&](int64_t kc) {
    const float* g = w + kc * 9;
    float t[4][3];  // G g
    for (int j = 0; j < 3; ++j) {
      t[0][j] = g[j];
      t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
      t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
      t[3][j] = g[6 + j];
    }
    for (int i = 0; i < 4; ++i) {
      const float u[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]),
                          0.5f * (t[i][0] - t[i][1] + t[i][2]), t[i][2]};
      for (int j = 0; j < 4; ++j) ut[(4 * i + j) * s.K * s.C + kc] = u[j];
    }
  });
  float* up = scratch(3, 16 * Kp * s.C);
  parallel_for(16, 16.0 * s.K * s.C, [&](int64_t e) {
    pack_a(up + e * Kp * s.C, MatView{ut + e * s.K * s.C, s.C, 1}, 0, s.K, 0, s.C, MR);
  });
  // Tile rows per item: V and M of one item (16 x (C + K) x tiles floats) near 640 KiB.
  const int64_t per_row = 16 * (s.C + s.K) * TX * 4;
  const int64_t tr = std::max<int64_t>(1, std::min(TY, (640 * 1024) / per_row));
  const int64_t nblk = (TY + tr - 1) / tr;
  const int64_t Tb = tr * TX;                 // tiles per item (at most)
  const int64_t Wb = 2 * TX + 34;             // padded input row: column j holds x column j - pw
  const int64_t nrows = 2 * tr + 2;           // input rows per item
  thread_local std::vector<int64_t> voff;
  voff.resize(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c) voff[c] = c * Tb;
  const int64_t* voffp = voff.data();
  int64_t base[16], depth[16];  // the 16 GEMMs: U_e at up + Kp * e * C, depth C each
  for (int e = 0; e < 16; ++e) base[e] = e * s.C, depth[e] = s.C;
  std::atomic<bool> finite{true};
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * s.C * 9 * PQ, [&](int64_t item) {
    const int64_t n = item / nblk, ty0 = item % nblk * tr, ty1 = std::min(TY, ty0 + tr);
    const int64_t nt = (ty1 - ty0) * TX;
    float* xb = scratch(6, s.C * nrows * Wb);
    float* v = scratch(2, 16 * s.C * Tb);
    float* m = scratch(1, 16 * s.K * Tb);
    // zero-padded input rows h = 2 * ty0 - ph + i, i < 2 * (ty1 - ty0) + 2
    for (int64_t c = 0; c < s.C; ++c) {
      float* bc = xb + c * nrows * Wb;
      pad_rows(bc, Wb, x + (n * s.C + c) * s.H * s.W, s.H, s.W, 2 * ty0 - s.ph,
               2 * (ty1 - ty0) + 2, s.pw);
      for (int64_t ty = ty0; ty < ty1; ++ty) {
        const float* rr = bc + 2 * (ty - ty0) * Wb;
        const float* r4[4] = {rr, rr + Wb, rr + 2 * Wb, rr + 3 * Wb};
        kt.wino_in_row(v + c * Tb + (ty - ty0) * TX, s.C * Tb, r4, TX);
      }
    }
    winograd_gemms(m, up, v, base, depth, 16, s.K, Tb, nt, voffp);
    if (!winograd_out_rows(kt.wino_out_row, y, m, b, s, n, ty0, ty1, TX, Tb)) finite = false;
  });
  return finite;
}

// 3x3, stride 2, enough channels: the stride-2 sum split by input phase and each part done the
// Winograd way. Along one axis a tile's outputs y0, y1 read padded inputs d0 .. d4 as
//   y0 = m_A + m_B,  y1 = m_B + m_C,  m_A = (d0 - d2) g0 + d1 g1,  m_B = d2 (g0 + g2),
//   m_C = (d4 - d2) g2 + d3 g1:
// five products for two outputs instead of six, 25 instead of 36 per 2x2 tile. Each of the
// 3 x 3 (row pattern, column pattern) pairs e is one GEMM, M_e (K x tiles) = U_e V_e, over a
// reduction of C times the pair's item count (1, 2 or 4 per channel); each 2x2 output is a sum
// of four M_e. The input transform reads the image rows in place. Items are (image, band of
// tile rows), bands chosen to waste the fewest GEMM columns. Returns false, and the caller takes
// the direct path, when those columns would still waste over 20 %, or if an output came out NaN
// or infinite (recomputed the direct way: the transforms subtract input values).
bool winograd_s2_forward(float* y, const float* x, const float* w, const float* b,
                         const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, PQ = s.P * s.Q;
  const int MR = kt.mr, NR = kt.nr;
  // Tile rows per item: the fewest computed GEMM columns (a tail of up to 16 runs as a half
  // tile), V and M of an item (25 C + 9 K floats per tile) within about 1.25 MiB.
  auto computed = [&](int64_t t) {
    return t / NR * NR + (t % NR == 0 ? 0 : t % NR <= 16 ? 16 : NR);
  };
  int64_t tr = 1;
  double best = -1.0;
  for (int64_t r = 1; r <= TY; ++r) {
    if (r > 1 && 4 * (25 * s.C + 9 * s.K) * r * TX > 1280 * 1024) break;
    const int64_t nb = (TY + r - 1) / r, last = TY - (nb - 1) * r;
    const double cols = double((nb - 1) * computed(r * TX) + computed(last * TX));
    if (best < 0 || cols < best) best = cols, tr = r;
  }
  // Rows of few tiles leave GEMM columns idle (up to 30 % on 7 tiles a row): then the direct
  // path is as fast, and takes the layer.
  if (best > 1.2 * TY * TX) return false;
  // Items per pattern: A = {A0, A1}, B = {B0}, C = {C0, C1} (items 0 .. 4); item i sums the
  // kernel rows (or columns) kRows[i]: g0, g1, g0 + g2, g2, g1.
  static const int kFirst[3] = {0, 2, 3}, kCount[3] = {2, 1, 2};
  static const int kPattern[5] = {0, 0, 1, 2, 2};
  static const int kRows[5][2] = {{0, -1}, {1, -1}, {0, 2}, {2, -1}, {1, -1}};
  int64_t depth[9], ebase[10];  // per pattern pair e: reduction length, offset (in C rows)
  ebase[0] = 0;
  for (int e = 0; e < 9; ++e) {
    depth[e] = s.C * kCount[e / 3] * kCount[e % 3];
    ebase[e + 1] = ebase[e] + depth[e];
  }
  // U_e (K x depth_e, column (c, ri, ci)) written straight into MR-row panels, one block per e:
  // element (k, d) of block e at up + Kp * ebase[e] + k / MR * MR * depth_e + d * MR + k % MR.
  const int64_t Kp = round_up(s.K, MR), npanel = Kp / MR;
  float* up = scratch(3, Kp * ebase[9]);
  parallel_for(9 * npanel, 25.0 * Kp * s.C, [&](int64_t item) {
    const int e = static_cast<int>(item / npanel), pr = e / 3, pc = e % 3;
    const int64_t k0 = item % npanel * MR;
    float* dst = up + Kp * ebase[e] + k0 * depth[e];
    for (int64_t c = 0; c < s.C; ++c)
      for (int i = 0; i < kCount[pr]; ++i)
        for (int j = 0; j < kCount[pc]; ++j, dst += MR) {
          const int* rr = kRows[kFirst[pr] + i];
          const int* tt = kRows[kFirst[pc] + j];
          for (int kk = 0; kk < MR; ++kk) {
            const int64_t k = k0 + kk;
            float u = 0.f;
            if (k < s.K) {
              const float* g = w + (k * s.C + c) * 9;
              for (int a = 0; a < 2 && rr[a] >= 0; ++a)
                for (int q = 0; q < 2 && tt[q] >= 0; ++q) u += g[3 * rr[a] + tt[q]];
            }
            dst[kk] = u;
          }
        }
  });
  const int64_t nblk = (TY + tr - 1) / tr, Tb = tr * TX;
  thread_local std::vector<int64_t> voff;
  voff.resize(static_cast<size_t>(4 * s.C));
  for (int64_t i = 0; i < 4 * s.C; ++i) voff[i] = i * Tb;
  const int64_t* voffp = voff.data();
  std::atomic<bool> finite{true};
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * s.C * 9 * PQ, [&](int64_t item) {
    const int64_t n = item / nblk, ty0 = item % nblk * tr, ty1 = std::min(TY, ty0 + tr);
    const int64_t nt = (ty1 - ty0) * TX;
    float* v = scratch(2, ebase[9] * Tb);
    float* m = scratch(1, 9 * s.K * Tb);
    for (int64_t c = 0; c < s.C; ++c) {
      const float* plane = x + (n * s.C + c) * s.H * s.W;
      float* dst[25];  // V row of item pair (ri, ci) of channel c, at tile row ty0
      for (int ri = 0; ri < 5; ++ri)
        for (int ci = 0; ci < 5; ++ci) {
          const int pr = kPattern[ri], pc = kPattern[ci];
          dst[ri * 5 + ci] = v + (ebase[3 * pr + pc] + (c * kCount[pr] + ri - kFirst[pr]) *
                                  kCount[pc] + ci - kFirst[pc]) * Tb;
        }
      for (int64_t ty = ty0; ty < ty1; ++ty) {
        const float* r5[5];
        for (int i = 0; i < 5; ++i) {
          const int64_t h = 4 * ty - s.ph + i;
          r5[i] = h >= 0 && h < s.H ? plane + h * s.W : nullptr;
        }
        kt.wino_s2_in_row(dst, r5, TX, s.pw, s.W);
        for (float*& d : dst) d += TX;
      }
    }
    winograd_gemms(m, up, v, ebase, depth, 9, s.K, Tb, nt, voffp);
    if (!winograd_out_rows(kt.wino_s2_out_row, y, m, b, s, n, ty0, ty1, TX, Tb)) finite = false;
  });
  return finite;
}

// 5x5, stride 1, batches of 16+ images: Winograd F(2x2, 5x5) with one image per vector lane
// (KernelTable::wino5_item): 36 multiplies per (2x2 outputs, c, k) instead of 100. Items are
// (16 images, band of tile rows); the weights are transformed once, in double precision. Returns
// false if an output came out NaN or infinite (the caller then recomputes the direct way: the
// transforms subtract input values, so an Inf in x could give NaN where the definition has Inf).
bool winograd5_forward(float* y, const float* x, const float* w, const float* b,
                       const Conv2dShape& s) {
  const int64_t TY = (s.P + 1) / 2, Kp = round_up(s.K, 8), CRS = s.C * 25;
  float* u = scratch(7, 36 * s.C * Kp);
  // u = G g G^T per (k, c), in double: G's rows are (1, 0, 0, 0, 0), (1, 1, 1, 1, 1) / 3,
  // (-1, 1, -1, 1, -1) / 3, -(16, 8, 4, 2, 1) / 15, (1, -2, 4, -8, 16) / 15, (0, 0, 0, 0, 1).
  auto g_1d = [](const double* g, int64_t step, double* o) {  // o[i] = (G g)[i]
    const double g0 = g[0], g1 = g[step], g2 = g[2 * step], g3 = g[3 * step], g4 = g[4 * step];
    o[0] = g0;
    o[1] = (g0 + g1 + g2 + g3 + g4) * (1 / 3.);
    o[2] = (-g0 + g1 - g2 + g3 - g4) * (1 / 3.);
    o[3] = (16 * g0 + 8 * g1 + 4 * g2 + 2 * g3 + g4) * (-1 / 15.);
    o[4] = (g0 - 2 * g1 + 4 * g2 - 8 * g3 + 16 * g4) * (1 / 15.);
    o[5] = g4;
  };
  for (int64_t k = 0; k < Kp; ++k)
    for (int64_t c = 0; c < s.C; ++c) {
      double g[25] = {}, t[6][5], v[6];  // t = G g (rows of G applied down the columns of g)
      if (k < s.K)
        for (int i = 0; i < 25; ++i) g[i] = w[k * CRS + c * 25 + i];
      for (int j = 0; j < 5; ++j) {
        double col[6];
        g_1d(g + j, 5, col);
        for (int i = 0; i < 6; ++i) t[i][j] = col[i];
      }
      for (int i = 0; i < 6; ++i) {
        g_1d(t[i], 1, v);
        for (int j = 0; j < 6; ++j)
          u[((i * 6 + j) * Kp + k / 8 * 8) * s.C + c * 8 + k % 8] = static_cast<float>(v[j]);
      }
    }
  Wino5Args a{x, y, s.N, s.C, s.H, s.W, s.K, s.P, s.Q, s.ph, s.pw, u, Kp, b, nullptr};
  // Tile rows per item: its buffers near 512 KiB.
  int64_t tr = TY;
  while (tr > 1 && 4 * wino5_buf_floats(a, tr) > 512 * 1024) tr = (tr + 1) / 2;
  const int64_t nblk = (TY + tr - 1) / tr, groups = (s.N + 15) / 16;
  std::atomic<bool> finite{true};
  parallel_for(groups * nblk, 1.0 * s.N * s.K * CRS * s.P * s.Q, [&](int64_t item) {
    Wino5Args ai = a;
    ai.buf = scratch(6, wino5_buf_floats(a, tr));
    const int64_t ty0 = item % nblk * tr;
    if (!g_kernels->wino5_item(ai, item / nblk * 16, ty0, std::min(TY, ty0 + tr)))
      finite = false;
  });
  return finite;
}

// Whether Winograd F(2x2, 5x5) beats the direct paths (~87 % of peak) on this shape, by a cost
// model in multiply-add times per 16 tiles (fitted on this machine): the products, 36 C Kp,
// plus two per (e, k) for their stores; ~300 C and ~100 K for the transforms and transposes;
// every group of 16 images paid in full. It must save 15 %. The transformed weights (36 C Kp
// floats) must stay within L2, and an item's buffers within 16 MiB.
bool winograd5_pays(const Conv2dShape& s) {
  if (s.R != 5 || s.S != 5 || s.sh != 1 || s.sw != 1 || s.N < 16 || s.P < 2 || s.Q < 2)
    return false;
  const int64_t Kp = round_up(s.K, 8);
  if (s.C * Kp > 1024) return false;
  const Wino5Args a{nullptr, nullptr, s.N, s.C, s.H, s.W, s.K, s.P, s.Q, s.ph, s.pw, nullptr,
                    Kp, nullptr, nullptr};
  if (wino5_buf_floats(a, 1) > 4 * 1024 * 1024) return false;  // rows too wide for the buffers
  const double groups = (s.N + 15) / 16, C = s.C, K = s.K;
  const double wino = groups * (36.0 * Kp * (C + 2) + 300 * C + 100 * K);
  const double direct = s.N / 16.0 * 100 * C * K / 0.87;
  return wino < 0.85 * direct;
}

// Stride-1 convolution of narrow images (few output columns: lanes along a row would mostly
// idle) with the ISA's channel-vectorised tile: 16 output channels in the lanes, two output rows
// of up to 12 positions per tile. Items: (image, block of 16 output channels).
void kvec_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp;
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, RS = s.R * s.S;
  const int64_t kblocks = (s.K + 15) / 16;
  // weights as [block][crs][16], zero-padded past K
  float* wp = scratch(3, kblocks * CRS * 16);
  for (int64_t kb = 0; kb < kblocks; ++kb)
    for (int64_t k = 0; k < CRS; ++k)
      for (int64_t kk = 0; kk < 16; ++kk) {
        const int64_t ko = kb * 16 + kk;
        wp[(kb * CRS + k) * 16 + kk] = ko < s.K ? w[ko * CRS + k] : 0.f;
      }
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t i = 0; i < RS; ++i) off[c * RS + i] = c * plane + (i / s.S) * Wp + i % s.S;
  const int64_t* offp = off.data();
  const auto kern = g_kernels->conv_kvec;
  const int64_t slack = 2 * Wp + 16, img = s.C * s.H * s.W;
  parallel_for(s.N * kblocks, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t n = item / kblocks, kb = item % kblocks;
    // The tiles read up to a row and 16 floats past the image (into lanes never stored). Without
    // padding, an image followed by that much of x is read in place; else it is copied,
    // zero-padded, with the slack.
    const float* buf = x + n * img;
    if (s.ph || s.pw || (s.N - 1 - n) * img < slack) {
      float* b = scratch(6, s.C * plane + slack);
      for (int64_t c = 0; c < s.C; ++c)
        pad_rows(b + c * plane, Wp, x + (n * s.C + c) * s.H * s.W, s.H, s.W, -s.ph, Hp, s.pw);
      std::fill(b + s.C * plane, b + s.C * plane + slack, 0.f);
      buf = b;
    }
    const int nk = static_cast<int>(std::min<int64_t>(16, s.K - kb * 16));
    float* yk = y + (n * s.K + kb * 16) * PQ;
    const float* bk = b ? b + kb * 16 : nullptr;
    for (int64_t p = 0; p < s.P; p += 2)
      for (int64_t q = 0; q < s.Q; q += 12) {
        const int nq = static_cast<int>(std::min<int64_t>(12, s.Q - q));
        kern(yk + p * s.Q + q, PQ, s.Q, buf + p * Wp + q, Wp, offp, CRS, wp + kb * CRS * 16, bk,
             nq, nk, p + 1 < s.P);
      }
  });
}

// Weight gradient as dot products of dy rows with input rows (KernelTable::conv_dw_tile), in
// tiles of kt output channels x tg taps (c, r, t) taken in weight order. The input rows are read
// in place from the zero-padded image (unit stride) or from a copy split into row and column
// phases, so that a tap's columns step by 1 and its rows by Wq. When rows are a vector or more
// and Wq is below Q rounded up to a vector (on narrower rows the long runs measured slower),
// each image's positions are one run over the wide grid p * Wq + q, with dy copied into rows
// of Wq (zeros in the Wq - Q extra columns): fewer partial vectors. The extra columns multiply
// input values by zero; should the result come out non-finite (an Inf in x), it is recomputed
// without them, so that Inf and NaN spread exactly as in the definition. Images go in fixed
// chunks whose dy rows fit in L2 (by shape only); each item reduces its chunk in one fixed
// order, chunks are added in order.
void dw_dot(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, KPQ = s.K * PQ;
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw;
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  // Input rows: the padded image at unit stride, else its (row, column) phases per channel
  // (sh * sw planes of Lr rows x Wq: plane (fr, fc), row l holds columns fc, fc + sw, ... of
  // padded row l * sh + fr). Either way output row p of tap (r, t) reads row p + r / sh of its
  // plane from column t / sw on, so rows step by Wq.
  const int64_t Wq = (Wp + s.sw - 1) / s.sw, Lr = (Hp + s.sh - 1) / s.sh;
  const int64_t fplane = Lr * Wq, cplane = s.sh * s.sw * fplane;
  const float* xb;
  if (s.sh == 1 && s.sw == 1) {
    xb = padded_input(x, s);
  } else {
    float* buf = scratch(4, s.N * s.C * cplane);
    parallel_for(s.N * s.C, kCopyCost * s.N * s.C * cplane, [&](int64_t i) {
      for (int64_t fr = 0; fr < s.sh; ++fr)  // padded rows fr + l * sh (past Hp: zeros)
        split_rows(buf + i * cplane + fr * s.sw * fplane, Wq, fplane, x + i * s.H * s.W, s.H,
                   s.W, fr - s.ph, s.sh, Lr, s.pw, s.sw, Wq);
    });
    xb = buf;
  }
  const int64_t x_ns = s.C * cplane, x_rs = Wq;
  for (int64_t k = 0; k < CRS; ++k) {
    const int64_t r = k / s.S % s.R, t = k % s.S;
    off[k] = (k / (s.R * s.S)) * cplane + ((r % s.sh) * s.sw + t % s.sw) * fplane +
             (r / s.sh) * Wq + t / s.sw;
  }
  // Tile shape: the fewest computed elements (padding of the last tiles included), each
  // weighted by the loads it costs: kt + tg vectors per kt * tg multiply-adds.
  static const int kShapes[7][2] = {{4, 6}, {6, 4}, {8, 3}, {3, 7}, {4, 5}, {12, 2}, {24, 1}};
  int ktile = 8, tg = 3;
  double best = -1.0;
  for (const auto& sh : kShapes) {
    const double loads = double(sh[0] + sh[1]) / (sh[0] * sh[1]);
    const double cost = double(round_up(s.K, sh[0]) * round_up(CRS, sh[1])) * (1.0 + 0.5 * loads);
    if (best < 0 || cost < best) best = cost, ktile = sh[0], tg = sh[1];
  }
  const int64_t ktiles = (s.K + ktile - 1) / ktile, groups = (CRS + tg - 1) / tg;
  const auto kern = g_kernels->conv_dw_tile;
  const int64_t* offp = off.data();  // this thread's: workers must not name the thread_local

  auto run = [&](bool wide) {
    DwTileArgs a{dy, KPQ, PQ, s.Q, xb, x_ns, x_rs, nullptr, s.N, s.P, s.Q};
    if (wide) {  // one run of positions per image over the wide grid
      a.P = 1;
      a.Q = (s.P - 1) * Wq + s.Q;
      if (Wq != s.Q) {  // planes a whole number of vectors apart: aligned dy loads
        const int64_t dplane = round_up(s.P * Wq, 16);
        float* dyw = scratch(5, s.N * s.K * dplane);
        parallel_for(s.N * s.K, kCopyCost * s.N * s.K * dplane, [&](int64_t i) {
          for (int64_t p = 0; p < s.P; ++p) {
            float* d = dyw + i * dplane + p * Wq;
            std::memcpy(d, dy + i * PQ + p * s.Q, sizeof(float) * s.Q);
            std::fill(d + s.Q, d + Wq, 0.f);
          }
        });
        a.dy = dyw;
        a.dy_ns = s.K * dplane;
        a.dy_ks = dplane;
      }
    }
    const int64_t nper = std::max<int64_t>(1, (256 * 1024) / (4 * ktile * a.dy_ks));
    const int64_t nchunks = (s.N + nper - 1) / nper;
    // per-chunk dW (items write every entry, so no zeroing)
    float* partial = nchunks > 1 ? scratch(7, nchunks * s.K * CRS) : nullptr;
    // An item takes a run of tiles along a row of dW, about 32 columns (items on different
    // threads then rarely write to the same cache line), fewer when the threads need more
    // items. Which item computes a tile does not change its bits.
    const int64_t want = (4 * get_num_threads() + nchunks * ktiles - 1) / (nchunks * ktiles);
    const int64_t gper = std::max<int64_t>(
        1, std::min<int64_t>({groups, (32 + tg - 1) / tg, groups / std::max<int64_t>(1, want)}));
    const int64_t gblocks = (groups + gper - 1) / gper, per_chunk = ktiles * gblocks;
    parallel_for(nchunks * per_chunk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
      const int64_t ch = item / per_chunk, gb = item % gblocks, kti = item % per_chunk / gblocks;
      const int64_t k0 = kti * ktile, n0 = ch * nper;
      DwTileArgs t = a;
      t.dy = a.dy + n0 * a.dy_ns + k0 * a.dy_ks;
      t.x = xb + n0 * x_ns;
      t.N = std::min(nper, s.N - n0);
      float* out = (nchunks > 1 ? partial + ch * s.K * CRS : dw) + k0 * CRS;
      for (int64_t g = gb * gper; g < std::min(groups, (gb + 1) * gper); ++g) {
        const int64_t c0 = g * tg;
        t.xoff = offp + c0;
        kern(out + c0, CRS, t, static_cast<int>(std::min<int64_t>(ktile, s.K - k0)),
             static_cast<int>(std::min<int64_t>(tg, CRS - c0)));
      }
    });
    if (nchunks > 1) reduce_in_order(dw, partial, nchunks, s.K * CRS);
  };
  const bool wide = Wq == s.Q || (s.Q >= 16 && Wq < round_up(s.Q, 16));
  run(wide);
  if (wide && Wq != s.Q && !std::all_of(dw, dw + s.K * CRS, [](float v) { return std::isfinite(v); }))
    run(false);
}

// Weight gradient for narrow outputs (rows of fewer than 16 columns; stride 1) with 16 output
// channels in the lanes (KernelTable::conv_dw_kvec): dy transposed to channels-last blocks of
// 16, tiles of up to 28 taps, images in 8 fixed chunks (by N only) reduced in order.
void dw_kvec(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, KPQ = s.K * PQ;
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp;
  const float* xb = padded_input(x, s);
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  for (int64_t k = 0; k < CRS; ++k)
    off[k] = (k / (s.R * s.S)) * plane + (k / s.S % s.R) * Wp + k % s.S;
  const int64_t* offp = off.data();
  const int64_t kblocks = (s.K + 15) / 16;
  float* dyT = scratch(5, s.N * kblocks * PQ * 16);  // [kb][n][position][16]
  parallel_for(s.N * kblocks, 4 * kCopyCost * s.N * kblocks * PQ, [&](int64_t i) {
    const int64_t kb = i / s.N, n = i % s.N;
    float* d = dyT + i * PQ * 16;
    const int64_t nk = std::min<int64_t>(16, s.K - kb * 16);
    const float* src = dy + n * KPQ + kb * 16 * PQ;
    for (int64_t j = 0; j < PQ; ++j) {
      for (int64_t kk = 0; kk < nk; ++kk) d[j * 16 + kk] = src[kk * PQ + j];
      for (int64_t kk = nk; kk < 16; ++kk) d[j * 16 + kk] = 0.f;
    }
  });
  // tiles of whole kernel rows, up to 28 taps, as even as they come
  const int64_t rows = s.C * s.R, gmax = 28 / s.S, ntiles = (rows + gmax - 1) / gmax;
  const int64_t tsize = (rows + ntiles - 1) / ntiles * s.S;
  const int64_t nchunks = std::min<int64_t>(s.N, 8), nper = (s.N + nchunks - 1) / nchunks;
  const int64_t nch = (s.N + nper - 1) / nper;
  // per-chunk dW (items write every entry, so no zeroing)
  float* partial = nch > 1 ? scratch(7, nch * s.K * CRS) : nullptr;
  const auto kern = g_kernels->conv_dw_kvec;
  const int64_t per_chunk = kblocks * ntiles;
  parallel_for(nch * per_chunk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t ch = item / per_chunk, kb = item % per_chunk / ntiles, ti = item % ntiles;
    const int64_t n0 = ch * nper, c0 = ti * tsize, k0 = kb * 16;
    float* out = (nch > 1 ? partial + ch * s.K * CRS : dw) + k0 * CRS + c0;
    kern(out, CRS, dyT + (kb * s.N + n0) * PQ * 16, xb + n0 * s.C * plane, s.C * plane, Wp,
         offp + c0, static_cast<int>(s.S), static_cast<int>(std::min(tsize, CRS - c0)),
         static_cast<int>(std::min<int64_t>(16, s.K - k0)), std::min(nper, s.N - n0), s.P, s.Q);
  });
  if (nch > 1) reduce_in_order(dw, partial, nch, s.K * CRS);
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, HW = s.H * s.W;
  if (s.N == 0 || s.K == 0 || PQ == 0) return;
  if (CRS == 0) {  // no input channels: the output is the bias
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        std::fill(y + (n * s.K + k) * PQ, y + (n * s.K + k + 1) * PQ, b ? b[k] : 0.f);
    return;
  }
  const KernelTable& kt = *g_kernels;
  if (kt.wino5_item && winograd5_pays(s) && winograd5_forward(y, x, w, b, s)) return;
  // Narrow outputs (rows of fewer than 16 columns) and at least 12 output channels: channels in
  // the lanes instead of positions.
  if (kt.conv_kvec && s.sh == 1 && s.sw == 1 && s.Q < 16 && s.K >= 12 && CRS <= 2048) {
    kvec_forward(y, x, w, b, s);
    return;
  }
  if (kt.wino_in_row && s.R == 3 && s.S == 3 && s.sh == 1 && s.sw == 1 && s.C >= 16 &&
      s.K >= 16 && s.Q >= 16 && s.P >= 2 && winograd_forward(y, x, w, b, s))
    return;
  if (kt.wino_s2_in_row && s.R == 3 && s.S == 3 && s.sh == 2 && s.sw == 2 && s.C >= 16 &&
      s.K >= 16 && s.Q >= 8 && s.P >= 2 && winograd_s2_forward(y, x, w, b, s))
    return;
  float* apack = scratch(3, round_up(s.K, kt.mr) * CRS);
  pack_a(apack, MatView{w, CRS, 1}, 0, s.K, 0, CRS, kt.mr);
  if (s.sw <= 4) {  // wider strides leave too many phases per input row
    direct_forward(y, x, apack, b, s);
    return;
  }
  // B panels of one item stay in L2 next to the packed weights.
  const int64_t bw = block_cols(CRS * 4, 384 * 1024, PQ, kt.nr);
  const int64_t nblk = (PQ + bw - 1) / bw;
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t n = item / nblk, j0 = (item % nblk) * bw, j1 = std::min(PQ, j0 + bw);
    float* bpack = scratch(2, round_up(j1 - j0, kt.nr) * CRS);
    im2col_panels(bpack, x + n * s.C * HW, s, j0, j1, kt.nr);
    gemm_packed(s.K, j1 - j0, CRS, apack, bpack, y + n * s.K * PQ + j0, PQ, false, b);
  });
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, HW = s.H * s.W, RS = s.R * s.S;
  const int64_t KPQ = s.K * PQ;
  const KernelTable& kt = *g_kernels;

  if (db) {
    parallel_for(s.K, 4.0 * s.N * KPQ, [&](int64_t k) {
      // 16 float lanes per image (vectorisable, fixed order), images added in float64
      double acc = 0.0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* g = dy + n * KPQ + k * PQ;
        float lane[16] = {};
        int64_t j = 0;
        for (; j + 16 <= PQ; j += 16)
          for (int l = 0; l < 16; ++l) lane[l] += g[j + l];
        double a = 0.0;
        for (; j < PQ; ++j) a += g[j];
        for (int l = 0; l < 16; ++l) a += lane[l];
        acc += a;
      }
      db[k] = static_cast<float>(acc);
    });
  }

  // The direct path computes C output rows in MR-row panels: worth it once C fills them.
  // It also computes over the zero border of the padded dy, so only "same"-like padding pays.
  const bool dx_direct = s.sh == 1 && s.sw == 1 && s.ph < s.R && s.pw < s.S &&
                         4 * s.C >= 3 * round_up(s.C, kt.mr) && 3 * HW <= 4 * PQ;
  // Few input channels, stride 1: rows of dx straight from dy, positions in the lanes.
  const bool dx_rows = kt.conv_dx_rows && !dx_direct && s.sh == 1 && s.sw == 1 && s.C <= 4 &&
                       s.S <= 16;
  // Batches of 16+ images, stride 1, few input channels that the GEMM tiles and col2im would
  // take: images in the lanes (conv_dx_lanes), the groups of 16 three quarters full or more,
  // the transposed dy and dx of a group within 16 MiB.
  const DxLanesArgs la{w, dy, s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.P, s.Q, s.ph, s.pw, dx, nullptr};
  const bool dx_lanes = dx && kt.conv_dx_lanes && !dx_direct && !dx_rows && s.sh == 1 &&
                        s.sw == 1 && s.C <= 8 && s.N >= 16 && 4 * s.N >= 3 * round_up(s.N, 16) &&
                        s.K > 0 && PQ > 0 && dx_lanes_buf_floats(la) <= 4 * 1024 * 1024;
  if (dx_lanes) {
    const DxLanesArgs& a = la;
    parallel_for((s.N + 15) / 16, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t g) {
      DxLanesArgs ag = a;
      ag.buf = scratch(6, dx_lanes_buf_floats(a));
      kt.conv_dx_lanes(ag, g * 16);
    });
  } else if (dx && s.N > 0 && s.C > 0 && s.K > 0 && PQ > 0 && dx_rows) {
    float* wt = scratch(5, s.C * s.K * RS);  // per input channel: (k, r, t)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t k = 0; k < s.K; ++k)
        std::memcpy(wt + (c * s.K + k) * RS, w + (k * s.C + c) * RS, sizeof(float) * RS);
    const DxRowsArgs a{s.K, s.R, s.S, s.P, s.Q, s.W, s.ph, s.pw};
    const int64_t nblk = (s.H + 3) / 4;
    parallel_for(s.N * s.C * nblk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
      const int64_t n = item / (s.C * nblk), c = item / nblk % s.C, h0 = item % nblk * 4;
      kt.conv_dx_rows(dx + ((n * s.C + c) * s.H + h0) * s.W, dy + n * KPQ, wt + c * s.K * RS, h0,
                      static_cast<int>(std::min<int64_t>(4, s.H - h0)), a);
    });
  } else if (dx && s.N > 0 && s.C > 0 && s.K > 0 && PQ > 0 && dx_direct) {
    // Stride 1: dx is the stride-1 convolution of dy, padded by (R-1-ph, S-1-pw), with the
    // weights flipped in space and transposed to (C, K, R, S).
    float* wf = scratch(5, s.C * s.K * RS);
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t i = 0; i < RS; ++i) wf[(c * s.K + k) * RS + (RS - 1 - i)] = w[(k * s.C + c) * RS + i];
    Conv2dShape t{s.N, s.K, s.P, s.Q, s.C, s.R, s.S, 1, 1, s.R - 1 - s.ph, s.S - 1 - s.pw, 0, 0};
    conv2d_out_size(t);
    conv2d_forward(dx, dy, wf, nullptr, t);
  } else if (dx && s.N > 0 && s.C > 0) {
    if (s.K == 0 || PQ == 0) {
      std::fill(dx, dx + s.N * s.C * HW, 0.f);
    } else {
      // Channel groups of about 64 rows of W^T (fewer when the images alone can't feed the
      // threads), each packed once: panels never straddle two groups.
      const int64_t nt = get_num_threads();
      int64_t per = std::max<int64_t>(1, (64 + RS - 1) / RS);
      const int64_t want_groups = (nt + s.N - 1) / s.N;
      per = std::min(per, std::max<int64_t>(1, (s.C + want_groups - 1) / want_groups));
      const int64_t ngrp = (s.C + per - 1) / per;
      const int64_t grp_stride = round_up(per * RS, kt.mr) * s.K;
      float* apack = scratch(3, ngrp * grp_stride);
      for (int64_t g = 0; g < ngrp; ++g) {
        const int64_t c0 = g * per, rows = (std::min(s.C, c0 + per) - c0) * RS;
        // W^T rows [c0*RS, c0*RS + rows): element (m, k) at w[k*CRS + c0*RS + m]
        pack_a(apack + g * grp_stride, MatView{w + c0 * RS, 1, CRS}, 0, rows, 0, s.K, kt.mr);
      }
      // dy_n's rows are read in place by the direct micro-kernel (row k at dy_n + k * PQ); the
      // gcol block (rows x bw) stays in L2 and is scattered back while still there.
      thread_local std::vector<int64_t> koff;
      koff.resize(static_cast<size_t>(s.K));
      for (int64_t k = 0; k < s.K; ++k) koff[k] = k * PQ;
      const int64_t* koffp = koff.data();
      const int64_t kcmax = gemm_kc(s.K);
      const int64_t bw = block_cols(4 * per * RS, 256 * 1024, PQ, kt.nr);
      parallel_for(s.N * ngrp, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
        const int64_t n = item / ngrp, g = item % ngrp;
        const int64_t c0 = g * per, nch = std::min(s.C, c0 + per) - c0, rows = nch * RS;
        float* dxn = dx + (n * s.C + c0) * HW;
        if (bw < PQ) std::fill(dxn, dxn + nch * HW, 0.f);  // col2im by blocks adds into dx
        float* gcol = scratch(1, rows * bw);
        const float* ap = apack + g * grp_stride;
        for (int64_t j0 = 0; j0 < PQ; j0 += bw) {
          const int64_t j1 = std::min(PQ, j0 + bw), ld = j1 - j0;
          for (int64_t pc = 0; pc < s.K; pc += kcmax) {
            const int64_t kc = std::min(kcmax, s.K - pc);
            for (int64_t jr = 0; jr < ld; jr += kt.nr)
              for (int64_t ir = 0; ir < rows; ir += kt.mr)
                kt.gemm_direct(kc, ap + ir * s.K + pc * kt.mr, dy + n * KPQ + j0 + jr, koffp + pc,
                               gcol + ir * ld + jr, ld,
                               static_cast<int>(std::min<int64_t>(kt.mr, rows - ir)),
                               static_cast<int>(std::min<int64_t>(kt.nr, ld - jr)), pc > 0,
                               nullptr);
          }
          if (bw < PQ) {
            col2im(dxn, gcol, ld, s, nch, j0, j1);
          } else {  // the whole image: each dx row written once, its taps summed in registers
            const Col2imArgs ca{s.H, s.W, s.P, s.Q, s.R, s.S, s.ph, s.pw, s.sh, s.sw};
            for (int64_t c = 0; c < nch; ++c)
              kt.col2im_plane(dxn + c * HW, gcol + c * RS * ld, ld, ca);
          }
        }
      });
    }
  }

  if (dw) {
    if (s.N == 0 || PQ == 0 || CRS == 0) {
      std::fill(dw, dw + s.K * CRS, 0.f);
      return;
    }
    if (kt.conv_dw_kvec && s.sh == 1 && s.sw == 1 && s.Q < 16 && s.K >= 12 && s.S <= 7) {
      dw_kvec(dw, dy, x, s);
      return;
    }
    if (kt.conv_dw_tile) {
      dw_dot(dw, dy, x, s);
      return;
    }
    // Fixed chunks of images (depending on N only); each chunk's partial dW is reduced in order.
    const int64_t nchunk = std::min<int64_t>(s.N, 16);
    const int64_t per = (s.N + nchunk - 1) / nchunk;
    const int64_t nch = (s.N + per - 1) / per;
    // per-chunk dW (items write every entry, so no zeroing)
  float* partial = nch > 1 ? scratch(7, nch * s.K * CRS) : nullptr;
    const float* xp = padded_input(x, s);
    const int64_t plane = (s.H + 2 * s.ph) * (s.W + 2 * s.pw);
    const int64_t kcmax = gemm_kc(PQ);
    const int64_t nc_max = 64 * kt.nr;
    parallel_for(nch, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t ci) {
      float* out = nch > 1 ? partial + ci * s.K * CRS : dw;
      float* apack = scratch(1, round_up(s.K, kt.mr) * kcmax);
      float* bpack = scratch(2, std::min(round_up(CRS, kt.nr), nc_max) * kcmax);
      const int64_t n0 = ci * per, n1 = std::min(s.N, n0 + per);
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t pc = 0; pc < PQ; pc += kcmax) {
          const int64_t kc = std::min(kcmax, PQ - pc);
          pack_a(apack, MatView{dy + n * KPQ, PQ, 1}, 0, s.K, pc, kc, kt.mr);
          for (int64_t jc = 0; jc < CRS; jc += nc_max) {
            const int64_t nc = std::min(nc_max, CRS - jc);
            pack_colT(bpack, xp + n * s.C * plane, s, pc, kc, jc, nc, kt.nr);
            for (int64_t jr = 0; jr < nc; jr += kt.nr)
              for (int64_t ir = 0; ir < s.K; ir += kt.mr)
                kt.gemm(kc, apack + ir * kc, bpack + jr * kc, out + ir * CRS + jc + jr, CRS,
                        static_cast<int>(std::min<int64_t>(kt.mr, s.K - ir)),
                        static_cast<int>(std::min<int64_t>(kt.nr, nc - jr)), n > n0 || pc > 0,
                        nullptr);
          }
        }
    });
    if (nch > 1) reduce_in_order(dw, partial, nch, s.K * CRS);
  }
}

}  // namespace convkit
