// 4x4 kernels at stride 2 (the down- and upsampling layers of DCGAN- and U-Net-style networks),
// forward, input gradient (a transposed convolution's forward) and weight gradient, the
// Winograd way.
//
// Split by phase, each direction is a sum of 2-tap correlations along each axis:
//   forward        y[p] = sum over a < 2 of X_a[p] w[a] + X_a[p + 1] w[a + 2], with the input
//                  phases X_a[i] = x[2i + a - ph] (the 4 phases (a, b) add up: extra depth)
//   input grad     dx rows h = h0_a + 2i of phase a = (h + ph) mod 2 are
//                  dy[i + o_a - 1] w[a + 2] + dy[i + o_a] w[a] (each of the 4 output phases is
//                  its own correlation, interleaved into dx at the end)
// and each 2-tap correlation is done as F(2, 2): along one axis a tile's outputs y0, y1 come from
// inputs d0, d1, d2 and taps g0, g1 as
//   y0 = mA + mB,  y1 = mB + mC,  mA = (d0 - d1) g0,  mB = d1 (g0 + g1),  mC = (d2 - d1) g1:
// 9 products per 2x2 tile instead of 16. Each pattern pair e = 3 pr + pc (patterns A, B, C) is
// one GEMM of the transformed weights U_e by the transformed inputs V_e (tiles as columns), and
// the output transform is KernelTable::wino_s2_out_row's (the same A^T = (1 1 0; 0 1 1)). The
// transforms add and subtract input values: an Inf in the input can give NaN where the definition
// has Inf, so a non-finite output makes the path decline and the next row recomputes the layer.
// Items are (image, band of tile rows), for the weight gradient chunks of images; the blocking
// depends on the shape only.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
namespace {

// u[e * us] for the 9 pattern pairs e = 3 pr + pc of the 2x2 correlation kernel q (taps g0, g1
// along each axis): U = G q G^T with G = (1 0; 1 1; 0 1).
void transform_kernel(float* u, int64_t us, float q00, float q01, float q10, float q11) {
  const float r0[3] = {q00, q00 + q01, q01}, r1[3] = {q10, q10 + q11, q11};
  for (int j = 0; j < 3; ++j) {
    u[j * us] = r0[j];
    u[(3 + j) * us] = r0[j] + r1[j];
    u[(6 + j) * us] = r1[j];
  }
}

// One MR-row panel of transformed weights: for depth indices d < depth, panel rows i < MR and
// kernel phases f < nph, q(d, i, f, g) gives the 2x2 kernel g (zeros for rows past the
// matrix); its 9 values go to dst + (9 f + e) * estride + d * MR + i. Staged 16 depth indices at
// a time: written one by one, the 9 nph streams (whole weight blocks apart, e.g. 32 KiB)
// evict each other from L1 and the transform costs 20 % of the GEMMs.
template <class Q>
void transform_panel(float* dst, int64_t estride, int nph, int64_t depth, int MR, Q&& q) {
  constexpr int64_t kB = 16;
  thread_local std::vector<float> tmp;
  tmp.resize(static_cast<size_t>(9 * nph * kB * MR));
  for (int64_t d0 = 0; d0 < depth; d0 += kB) {
    const int64_t nd = std::min(kB, depth - d0);
    for (int64_t d = d0; d < d0 + nd; ++d)
      for (int i = 0; i < MR; ++i)
        for (int f = 0; f < nph; ++f) {
          float g[4];
          q(d, i, f, g);
          transform_kernel(tmp.data() + (9 * f * kB + d - d0) * MR + i, kB * MR, g[0], g[1], g[2],
                           g[3]);
        }
    for (int e = 0; e < 9 * nph; ++e)
      std::memcpy(dst + e * estride + d0 * MR, tmp.data() + e * kB * MR, sizeof(float) * nd * MR);
  }
}

// The 9 transformed inputs of a row of n tiles, v[e * vs + t] (e = 3 pr + pc), from the
// inputs d(ri, ci)[t] = r_ri[c_ci + t]: down the rows (d0 - d1, d1, d2 - d1), then the same
// along the columns. Four tiles at a time in a vector (one SSE register, which every x86-64
// has), the rest one by one; the same arithmetic either way.
typedef float V4 __attribute__((vector_size(16)));
inline void load(V4& v, const float* p) { std::memcpy(&v, p, sizeof v); }
inline void load(float& v, const float* p) { v = *p; }
inline void store(float* p, const V4& v) { std::memcpy(p, &v, sizeof v); }
inline void store(float* p, float v) { *p = v; }

template <class T>
inline void transform_tile(float* v, int64_t vs, const float* r0, const float* r1,
                           const float* r2, const int64_t* col) {
  T d[3][3];
  for (int ci = 0; ci < 3; ++ci) {
    load(d[0][ci], r0 + col[ci]);
    load(d[1][ci], r1 + col[ci]);
    load(d[2][ci], r2 + col[ci]);
  }
  for (int ci = 0; ci < 3; ++ci) {
    d[0][ci] = d[0][ci] - d[1][ci];
    d[2][ci] = d[2][ci] - d[1][ci];
  }
  for (int ri = 0; ri < 3; ++ri) {
    store(v + (3 * ri) * vs, d[ri][0] - d[ri][1]);
    store(v + (3 * ri + 1) * vs, d[ri][1]);
    store(v + (3 * ri + 2) * vs, d[ri][2] - d[ri][1]);
  }
}

// (always inline: a call per row of tiles cost 10 % of the layer at 8 tiles a row)
inline __attribute__((always_inline)) void transform_tiles(float* v, int64_t vs, int64_t n,
                                                           const float* r0, const float* r1,
                                                           const float* r2, const int64_t* col) {
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) transform_tile<V4>(v + t, vs, r0 + t, r1 + t, r2 + t, col);
  for (; t < n; ++t) transform_tile<float>(v + t, vs, r0 + t, r1 + t, r2 + t, col);
}

// The 4 input phases (a, b) of one tile row: `rows` are the x rows 4ty - ph + i of the row, each
// split into its 4 column phases (Wq apart): tile tx of phase (a, b) reads rows a, a + 2, a + 4
// and columns 4tx + b - pw + 2ci (phases b, b + 2, b). Phase 2a + b goes to v + (2a + b) *
// fstride, its 9 transformed rows vs apart.
inline void input_phases(float* v, int64_t fstride, int64_t vs, const float* rows, int64_t Wq,
                         int64_t TX) {
  for (int a = 0; a < 2; ++a)
    for (int bb = 0; bb < 2; ++bb) {
      const int64_t col[3] = {bb * Wq, (bb + 2) * Wq, bb * Wq + 1};
      const float* r0 = rows + a * 4 * Wq;
      transform_tiles(v + (a * 2 + bb) * fstride, vs, TX, r0, r0 + 8 * Wq, r0 + 16 * Wq, col);
    }
}

// The output-gradient transform of a row of n tiles (A dY A^T, A = (1 0; 1 1; 0 1)):
// y[e * ys + t] (e = 3 pr + pc) from the 2x2 blocks (r0e[t], r0o[t]; r1e[t], r1o[t]), four
// tiles at a time as transform_tiles.
template <class T>
inline void transform_grad_tile(float* y, int64_t ys, const float* r0e, const float* r0o,
                                const float* r1e, const float* r1o) {
  T a0, a1, c0, c1;
  load(a0, r0e);
  load(a1, r0o);
  load(c0, r1e);
  load(c1, r1o);
  const T d[3][2] = {{a0, a1}, {a0 + c0, a1 + c1}, {c0, c1}};
  for (int pr = 0; pr < 3; ++pr) {
    store(y + (3 * pr) * ys, d[pr][0]);
    store(y + (3 * pr + 1) * ys, d[pr][0] + d[pr][1]);
    store(y + (3 * pr + 2) * ys, d[pr][1]);
  }
}

inline __attribute__((always_inline)) void transform_grad_tiles(float* y, int64_t ys, int64_t n,
                                                                const float* r0e,
                                                                const float* r0o,
                                                                const float* r1e,
                                                                const float* r1o) {
  int64_t t = 0;
  for (; t + 4 <= n; t += 4)
    transform_grad_tile<V4>(y + t, ys, r0e + t, r0o + t, r1e + t, r1o + t);
  for (; t < n; ++t) transform_grad_tile<float>(y + t, ys, r0e + t, r0o + t, r1e + t, r1o + t);
}

// Tile rows per item: its V and M (floats_per_tile each tile) near 640 KiB, and at least 2
// items in all where that leaves 32+ tiles an item (one image alone left a thread idle: 1.37 ms
// against gemm_col2im's 1.26 for a transposed 128 -> 64 layer on 16x16 at batch 1; fewer tiles
// leave the GEMMs' 32 columns idle), bands even.
int64_t band_rows(int64_t N, int64_t TY, int64_t tiles_per_row, int64_t floats_per_tile) {
  const int64_t per_row = 4 * floats_per_tile * tiles_per_row;
  const int64_t tr = std::max<int64_t>(1, std::min(TY, (640 * 1024) / per_row));
  int64_t nblk = (TY + tr - 1) / tr;
  if (N == 1 && nblk == 1 && TY * tiles_per_row >= 64) nblk = 2;
  return (TY + nblk - 1) / nblk;
}

}  // namespace

// An item's buffers within about 16 MiB at one tile row (36 (C + K) floats a tile bounds the
// input gradient's split rows, V and M of one phase and its output rows).
bool winograd4_s2_fits(const Conv2dShape& s) {
  const int64_t TX = (s.Q + 1) / 2, TXi = (s.W + 3) / 4;
  return 9 * (4 * s.C + s.K) * TX <= 4 * 1024 * 1024 &&
         36 * (s.C + s.K) * TXi <= 4 * 1024 * 1024;
}

bool winograd4_s2_forward(float* y, const float* x, const float* w, const float* b,
                          const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, D = 4 * s.C;  // depth: (c, a, b)
  // U_e (K x D): element (k, (c, a, b)) from kernel phase (a, b) of w[k][c], written straight
  // into MR-row panels: at up + e * Kp * De + k / MR * MR * D + d * MR + k % MR (zero past K)
  const int MR = kt.mr;
  const int64_t Kp = round_up(s.K, MR);
  // The 9 blocks of U, V and M one row longer than they need: whole blocks apart, their rows
  // would fall on the same L1 sets (the transforms and out_row go through all 9 at once).
  const int64_t De = D + 1;
  float* up = scratch(Buf::wino_weights, 9 * Kp * De);
  parallel_for(Kp / MR, 64.0 * s.K * s.C, [&](int64_t p) {
    transform_panel(up + p * MR * D, Kp * De, 1, D, MR, [&](int64_t d, int i, int, float* q) {
      const int64_t k = p * MR + i, c = d / 4;
      const int a = static_cast<int>(d / 2 % 2), bb = static_cast<int>(d % 2);
      if (k >= s.K) {
        std::fill(q, q + 4, 0.f);
        return;
      }
      const float* g = w + (k * s.C + c) * 16;  // taps g0 = w[a], g1 = w[a + 2] on each axis
      q[0] = g[4 * a + bb], q[1] = g[4 * a + bb + 2];
      q[2] = g[4 * (a + 2) + bb], q[3] = g[4 * (a + 2) + bb + 2];
    });
  });
  const int64_t tr = band_rows(s.N, TY, TX, 9 * (D + s.K)), nblk = (TY + tr - 1) / tr, Tb = tr * TX;
  const int64_t Wq = TX + 1;  // the 4 column phases of an x row: columns 4j + f - pw
  thread_local std::vector<int64_t> voff;
  voff.resize(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) voff[d] = d * Tb;
  const int64_t* voffp = voff.data();
  int64_t base[9], depth[9];
  for (int e = 0; e < 9; ++e) base[e] = e * De, depth[e] = D;
  std::atomic<bool> finite{true};
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * s.C * 16 * s.P * s.Q, [&](int64_t item) {
    const int64_t n = item / nblk, ty0 = item % nblk * tr, ty1 = std::min(TY, ty0 + tr);
    // x rows 4 ty0 - ph + i: tile row ty, input phase a reads local rows 4 (ty - ty0) + a + 2ri
    const int64_t nrows = 4 * (ty1 - ty0) + 2;
    float* sp = scratch(Buf::wino_rows, nrows * 4 * Wq);
    float* v = scratch(Buf::wino_v, 9 * De * Tb);
    float* m = scratch(Buf::wino_m, 9 * (s.K + 1) * Tb);
    for (int64_t c = 0; c < s.C; ++c) {
      if (c + 1 < s.C)
        prefetch_rows(x + (n * s.C + c + 1) * s.H * s.W, s.H, s.W, 4 * ty0 - s.ph, nrows);
      split_rows(sp, 4 * Wq, Wq, x + (n * s.C + c) * s.H * s.W, s.H, s.W, 4 * ty0 - s.ph, 1,
                 nrows, s.pw, 4, Wq);
      for (int64_t ty = ty0; ty < ty1; ++ty)
        input_phases(v + c * 4 * Tb + (ty - ty0) * TX, Tb, De * Tb, sp + 4 * (ty - ty0) * 4 * Wq,
                     Wq, TX);
    }
    winograd_gemms(m, up, v, base, depth, 9, s.K, Tb, (ty1 - ty0) * TX, voffp, s.K + 1);
    if (!winograd_out_rows(kt.wino_s2_out_row, y, m, b, s, n, ty0, ty1, TX, Tb, s.K + 1))
      finite = false;
  });
  return finite;
}

bool winograd4_s2_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  // Per axis and phase a: outputs h0[a] + 2i (i < cnt[a]) read dy[i + o[a] - 1 + {0, 1}].
  struct Axis {
    int64_t h0[2], o[2], cnt[2];
    Axis(int64_t size, int64_t pad) {
      for (int a = 0; a < 2; ++a) {
        h0[a] = ((a - pad) % 2 + 2) % 2;
        o[a] = (h0[a] + pad - a) / 2;
        cnt[a] = std::max<int64_t>(0, (size - h0[a] + 1) / 2);
      }
    }
  };
  const Axis ar(s.H, s.ph), ac(s.W, s.pw);
  const int64_t Pm = (s.H + 1) / 2, Qm = (s.W + 1) / 2, TY = (Pm + 1) / 2, TX = (Qm + 1) / 2;
  // U of output phase (a, b), pattern pair e: C x K, element (c, k) from w[k][c], written
  // straight into MR-row panels: at up + ((a * 2 + b) * 9 + e) * Cp * K + c / MR * MR * K +
  // k * MR + c % MR (zero past C)
  const int MR = kt.mr;
  const int64_t Cp = round_up(s.C, MR), Ke = s.K + 1;  // blocks a row longer (as forward)
  float* up = scratch(Buf::wino_weights, 36 * Cp * Ke);
  parallel_for(Cp / MR, 64.0 * s.K * s.C, [&](int64_t p) {
    transform_panel(up + p * MR * s.K, Cp * Ke, 4, s.K, MR, [&](int64_t k, int i, int f,
                                                               float* q) {
      const int64_t c = p * MR + i;
      const int a = f / 2, bb = f % 2;
      if (c >= s.C) {
        std::fill(q, q + 4, 0.f);
        return;
      }
      const float* g = w + (k * s.C + c) * 16;  // taps g0 = w[a + 2], g1 = w[a] on each axis
      q[0] = g[4 * (a + 2) + bb + 2], q[1] = g[4 * (a + 2) + bb];
      q[2] = g[4 * a + bb + 2], q[3] = g[4 * a + bb];
    });
  });
  const int64_t tr = band_rows(s.N, TY, TX, 9 * (s.C + s.K)), nblk = (TY + tr - 1) / tr;
  const int64_t Tb = tr * TX;
  const int64_t omin = std::min(ar.o[0], ar.o[1]), Wq = TX + 2;
  thread_local std::vector<int64_t> voff;
  voff.resize(static_cast<size_t>(s.K));
  for (int64_t k = 0; k < s.K; ++k) voff[k] = k * Tb;
  const int64_t* voffp = voff.data();
  int64_t base[9], depth[9];  // one output phase's 9 GEMMs
  for (int e = 0; e < 9; ++e) base[e] = e * Ke, depth[e] = s.K;
  std::atomic<bool> finite{true};
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * s.C * 16 * s.P * s.Q, [&](int64_t item) {
    const int64_t n = item / nblk, ty0 = item % nblk * tr, ty1 = std::min(TY, ty0 + tr);
    const int64_t lo = 2 * ty0 + omin - 1, nrows = 2 * (ty1 - ty0) + 3;  // dy rows lo + i
    const int64_t plane_in = nrows * 2 * Wq, plane_out = 4 * tr * 2 * Qm;
    float* sp = scratch(Buf::wino_rows, s.K * plane_in + s.C * plane_out);
    float* out = sp + s.K * plane_in;  // per c: dx rows 4 ty0 + i, their 2 column phases
    float* v = scratch(Buf::wino_v, 9 * Ke * Tb);
    float* m = scratch(Buf::wino_m, 9 * (s.C + 1) * Tb);
    for (int64_t k = 0; k < s.K; ++k)  // dy column q at phase (q + 2) % 2, index (q + 2) / 2
      split_rows(sp + k * plane_in, 2 * Wq, Wq, dy + (n * s.K + k) * s.P * s.Q, s.P, s.Q, lo, 1,
                 nrows, 2, 2, Wq);
    bool ok = true;
    for (int a = 0; a < 2; ++a)
      for (int bb = 0; bb < 2; ++bb) {  // output phase (a, b): dy columns 2tx + o_b - 1 + ci
        int64_t col[3];
        for (int ci = 0; ci < 3; ++ci) {
          const int64_t q2 = ac.o[bb] + 1 + ci;
          col[ci] = q2 % 2 * Wq + q2 / 2;
        }
        for (int64_t k = 0; k < s.K; ++k)
          for (int64_t ty = ty0; ty < ty1; ++ty) {
            const float* r0 = sp + k * plane_in + (2 * ty + ar.o[a] - 1 - lo) * 2 * Wq;
            transform_tiles(v + k * Tb + (ty - ty0) * TX, Ke * Tb, TX, r0, r0 + 2 * Wq,
                            r0 + 4 * Wq, col);
          }
        winograd_gemms(m, up + (a * 2 + bb) * 9 * Cp * Ke, v, base, depth, 9,
                       s.C, Tb, (ty1 - ty0) * TX, voffp, s.C + 1);
        for (int64_t c = 0; c < s.C; ++c)
          for (int64_t ty = ty0; ty < ty1 && 2 * ty < ar.cnt[a]; ++ty) {
            const int64_t lr = 2 * (2 * ty) + ar.h0[a] - 4 * ty0;  // local dx row of i = 2ty
            float* o0 = out + c * plane_out + lr * 2 * Qm + ac.h0[bb] * Qm;
            ok &= kt.wino_s2_out_row(o0, 2 * ty + 1 < ar.cnt[a] ? o0 + 4 * Qm : nullptr,
                                     m + c * Tb + (ty - ty0) * TX, (s.C + 1) * Tb, TX,
                                     ac.cnt[bb], 0.f);
          }
      }
    const int64_t h_end = std::min(s.H, 4 * ty1);
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t h = 4 * ty0; h < h_end; ++h)
        kt.phase_merge_row(dx + ((n * s.C + c) * s.H + h) * s.W,
                           out + c * plane_out + (h - 4 * ty0) * 2 * Qm, Qm, 2, 0, s.W);
    if (!ok) finite = false;
  });
  return finite;
}

// The weight gradient the same way: with V_e the forward's input transforms (depth (c, a, b))
// and Y_e = A dY A^T of each 2x2 block of dy, dU_e (K x D) = sum over tiles of Y_e V_e^T, one
// GEMM per e and group of images (reduction over their tiles), and each 2x2 kernel phase is
// G^T dU G: along each axis g0 gets dU_A + dU_B, g1 gets dU_B + dU_C. The transforms go through
// a small buffer straight into the micro-kernel's packed panels (tiles are the reduction, so
// each is a transpose; packing afterwards cost 14 % of the layer). Items are chunks of images
// (as dw_gemm's), their partial sums added in chunk order.
bool winograd4_s2_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, T = TX * TY, D = 4 * s.C;
  const int64_t Wq = TX + 1;
  const int64_t Kp = round_up(s.K, MR), Dp = round_up(D, NR);
  const int64_t nrows = 4 * TY + 2;  // x rows -ph + i (as the forward's single band)
  const int64_t split = std::max(NR / 4 * nrows * 4 * Wq, 4 * TY * TX);
  // packed: B_e (tiles x D) in NR-column panels, A_e = Y_e (K x tiles) in MR-row panels
  auto pack = [&](int64_t n, int64_t t0, int64_t Tg, float* ap, float* bp) {
    float* sp = scratch(Buf::wino_rows, split + 9 * std::max<int64_t>(NR * TX, MR * T));
    float* tmp = sp + split;
    // the NR / 4 channels of one B panel at a time: whole panel rows (NR floats) written
    for (int64_t c0 = 0; c0 < s.C; c0 += NR / 4) {
      const int64_t nc = std::min<int64_t>(NR / 4, s.C - c0);
      for (int64_t c = c0; c < c0 + nc; ++c)
        split_rows(sp + (c - c0) * nrows * 4 * Wq, 4 * Wq, Wq, x + (n * s.C + c) * s.H * s.W,
                   s.H, s.W, -s.ph, 1, nrows, s.pw, 4, Wq);
      float* panel = bp + c0 * 4 * Tg;  // columns 4 c0 .. of each B_e
      for (int64_t ty = 0; ty < TY; ++ty) {
        for (int64_t c = c0; c < c0 + nc; ++c)  // tmp: [(c - c0, phase)][e][tx]
          input_phases(tmp + (c - c0) * 4 * 9 * TX, 9 * TX, TX,
                       sp + ((c - c0) * nrows + 4 * ty) * 4 * Wq, Wq, TX);
        for (int e = 0; e < 9; ++e)
          transpose_into(panel + e * Dp * Tg + (t0 + ty * TX) * NR, NR, tmp + e * TX, 9 * TX,
                         4 * nc, TX);
      }
    }
    for (int64_t k0 = 0; k0 < Kp; k0 += MR) {  // tmp: [ty][k - k0][e][tx]
      for (int64_t kk = 0; kk < MR; ++kk) {
        const int64_t k = k0 + kk;
        if (k >= s.K) {
          for (int64_t ty = 0; ty < TY; ++ty)
            std::fill(tmp + (ty * MR + kk) * 9 * TX, tmp + (ty * MR + kk + 1) * 9 * TX, 0.f);
          continue;
        }
        // dy rows split into even and odd columns
        split_rows(sp, 2 * TX, TX, dy + (n * s.K + k) * s.P * s.Q, s.P, s.Q, 0, 1, 2 * TY, 0, 2,
                   TX);
        for (int64_t ty = 0; ty < TY; ++ty) {
          const float* r = sp + 4 * ty * TX;  // rows 2ty, 2ty + 1
          transform_grad_tiles(tmp + (ty * MR + kk) * 9 * TX, TX, TX, r, r + TX, r + 2 * TX,
                               r + 3 * TX);
        }
      }
      for (int e = 0; e < 9; ++e)
        for (int64_t ty = 0; ty < TY; ++ty)
          transpose_into(ap + e * Kp * Tg + k0 * Tg + (t0 + ty * TX) * MR, MR,
                         tmp + (ty * MR * 9 + e) * TX, 9 * TX, MR, TX);
    }
  };
  // chunks of 8+ images (a chunk's dU is 2.25 times dW: adding up the partials of dw_gemm's
  // 4-image chunks took 10 % of the time)
  const float* sum = winograd_dw_sum(s, 9, D, T, 8, 2.0 * s.N * s.K * s.C * 16 * s.P * s.Q, pack);
  parallel_for(s.K, 64.0 * s.K * s.C, [&](int64_t k) {
    for (int64_t c = 0; c < s.C; ++c)
      for (int a = 0; a < 2; ++a)
        for (int bb = 0; bb < 2; ++bb) {
          const float* u = sum + k * D + c * 4 + a * 2 + bb;  // dU_e at u[e * K * D]
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {  // patterns i, i + 1 down, j, j + 1 across
              const float* r0 = u + 3 * i * s.K * D;
              const float* r1 = r0 + 3 * s.K * D;
              dw[((k * s.C + c) * 4 + a + 2 * i) * 4 + bb + 2 * j] =
                  (r0[j * s.K * D] + r0[(j + 1) * s.K * D]) +
                  (r1[j * s.K * D] + r1[(j + 1) * s.K * D]);
            }
        }
  });
  return true;
}

}  // namespace conv
}  // namespace convkit
