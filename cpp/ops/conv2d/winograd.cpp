// Winograd-style forward convolutions: F(2x2, 3x3) at stride 1, the phase-split F(2, 2)-style
// sum at stride 2, and F(2x2, 5x5) with images in the vector lanes.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
// V_e's rows are Tb apart from v + base[e] * Tb (voff[i] = i * Tb).
void winograd_gemms(float* m, const float* up, const float* v, const int64_t* base,
                    const int64_t* depth, int ne, int64_t K, int64_t Tb, int64_t nt,
                    const int64_t* voff, int64_t mrows) {
  if (mrows == 0) mrows = K;
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
                         voff + pc, m + (e * mrows + ir) * Tb + jr, Tb,
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
                       int64_t ty0, int64_t ty1, int64_t TX, int64_t Tb, int64_t mrows) {
  if (mrows == 0) mrows = s.K;
  bool ok = true;
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t ty = ty0; ty < ty1; ++ty) {
      float* yr = y + ((n * s.K + k) * s.P + 2 * ty) * s.Q;
      ok &= out_row(yr, 2 * ty + 1 < s.P ? yr + s.Q : nullptr, m + k * Tb + (ty - ty0) * TX,
                    mrows * Tb, TX, s.Q, b ? b[k] : 0.f);
    }
  return ok;
}

// The input transform of tile rows [ty0, ty1) of image n, row phase al (winograd_forward's
// items and its grouped path): the x rows al - ph + (2 ty0 + i) dh, i < 2 rows + 2, zero outside
// x, each split into its dw column phases in xb (Wb floats apart: the 2 TX + 2 columns the tiles
// read, then what wino_in_row may load past them into lanes it does not store), then B^T d B.
// Tile (ty, be, tx) is V column ((ty - ty0) dw + be) TX + tx; channel c's row is at v + c * ld,
// the e's C * ld apart.
static void wino_in_rows(float* v, int64_t ld, float* xb, const float* x, const Conv2dShape& s,
                         int64_t n, int64_t al, int64_t ty0, int64_t ty1, int64_t TX) {
  const KernelTable& kt = *g_kernels;
  const int64_t dh = s.dh, dw = s.dw, Wb = 2 * TX + 34, nrows = 2 * (ty1 - ty0) + 2;
  for (int64_t c = 0; c < s.C; ++c) {
    float* bc = xb + c * nrows * dw * Wb;
    split_rows(bc, dw * Wb, Wb, x + (n * s.C + c) * s.H * s.W, s.H, s.W,
               al - s.ph + 2 * ty0 * dh, dh, nrows, s.pw, dw, 2 * TX + 2);
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t be = 0; be < dw; ++be) {
        const float* rr = bc + 2 * (ty - ty0) * dw * Wb + be * Wb;
        const float* r4[4] = {rr, rr + dw * Wb, rr + 2 * dw * Wb, rr + 3 * dw * Wb};
        kt.wino_in_row(v + c * ld + ((ty - ty0) * dw + be) * TX, s.C * ld, r4, TX);
      }
  }
}

// winograd_forward for deep layers (K C > 256 x 256): the tiles of a group of images side by side
// in one set of GEMMs whose items are (e, block of 64+ output channels), so that U (16 K C floats,
// 16 MiB at 512 x 512 channels) is streamed once a group, not once an image: with an item per
// image (forced, 2 threads) (8, 512, 14, 14) took 67-72 ms against 24-27 this way, (2, 512,
// 14, 14) 18-24 against 8-10; with 256 x 256 channels or fewer the items per image were faster
// ((8, 128, 28, 28) 5.4-5.9 against 6.2-10, (16, 256, 8, 8) 4.0-5.4 against 4.6-5.9).
// Phases per group: the input transforms (an image an item) into V (e, c, the group's tiles),
// the GEMMs, the output transforms (an image an item). Each output's sum over c runs in the
// same kc blocks as the per-image items': the same bits.
static bool winograd_forward_grouped(float* y, const float* x, const float* up, const float* b,
                                     const Conv2dShape& s, int64_t TY, int64_t TX) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr;
  const int64_t tiles = TY * TX, Kp = round_up(s.K, MR);
  // images a group: V and M (16 (C + K) floats a tile) up to 16 MiB
  const int64_t G = std::max<int64_t>(1, std::min(s.N, (4 << 20) / (16 * (s.C + s.K) * tiles)));
  const int64_t Tt = G * tiles;  // V's and M's row length (the last group may use fewer)
  float* v = scratch(Buf::wino_v, 16 * s.C * Tt);
  float* m = scratch(Buf::wino_m, 16 * s.K * Tt);
  thread_local std::vector<int64_t> voff;  // (the items read it through voffp, the caller's)
  voff.resize(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c) voff[c] = c * Tt;
  const int64_t* voffp = voff.data();
  const int64_t xb_floats = s.C * (2 * TY + 2) * (2 * TX + 34);  // wino_in_rows' rows
  const int64_t kRows = round_up(64, MR);  // output channels a GEMM item: whole MR panels
  const int64_t kblocks = (s.K + kRows - 1) / kRows;
  const int64_t depth = s.C, base = 0;
  std::atomic<bool> finite{true};
  for (int64_t n0 = 0; n0 < s.N; n0 += G) {
    const int64_t g = std::min(G, s.N - n0), nt = g * tiles;
    parallel_for(g, 40.0 * s.C * tiles * g, [&](int64_t i) {
      wino_in_rows(v + i * tiles, Tt, scratch(Buf::wino_rows, xb_floats), x, s, n0 + i, 0, 0,
                   TY, TX);
    });
    parallel_for(16 * kblocks, 32.0 * s.K * s.C * nt, [&](int64_t it) {
      const int64_t e = it / kblocks, k0 = it % kblocks * kRows;
      winograd_gemms(m + (e * s.K + k0) * Tt, up + Kp * e * s.C + k0 * s.C, v + e * s.C * Tt,
                     &base, &depth, 1, std::min(kRows, s.K - k0), Tt, nt, voffp);
    });
    parallel_for(g, 40.0 * s.K * tiles * g, [&](int64_t i) {
      if (!winograd_out_rows(kt.wino_out_row, y, m + i * tiles, b, s, n0 + i, 0, TY, TX, Tt))
        finite = false;
    });
  }
  return finite;
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
//
// A dilated layer (dilation dh x dw) is dh * dw undilated ones: output rows p = al + i * dh
// and columns be + j * dw (phase (al, be)) read only the x rows al - ph + (i + r) * dh and
// columns be - pw + (j + t) * dw. Items are then (image, row phase al, block of tile rows):
// each gathers its rows split into their dw column phases, puts the tiles of all column phases
// side by side in one set of GEMMs, and interleaves the column phases' output rows into y.
// Every phase is tiled as the largest one (Pm x Qm outputs); the others' extra outputs are
// computed from zeros and never stored.
bool winograd_forward(float* y, const float* x, const float* w, const float* b,
                      const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t dh = s.dh, dw = s.dw;
  const int64_t Pm = (s.P + dh - 1) / dh, Qm = (s.Q + dw - 1) / dw;  // the largest phase
  const int64_t TX = (Qm + 1) / 2, TY = (Pm + 1) / 2, PQ = s.P * s.Q;
  const int MR = kt.mr;
  // U[e] = G g G^T for every (k, c), straight into MR-row panels per e (pack_a's layout: (k, c)
  // at e * Kp * C + k / MR * MR * C + c * MR + k % MR, rows past K zero), a panel an item: U
  // computed (k, c) by (k, c) into 16 arrays then packed, or a value at a time into the panels,
  // was 40 % of a 512-channel layer at batch 8
  const int64_t Kp = round_up(s.K, MR);
  float* up = scratch(Buf::wino_weights, 16 * Kp * s.C);
  // The panel's MR kernels of a channel side by side (g[i][kk], 16 lanes whatever MR), so
  // that each step below is one loop over the lanes, vectorised; the copies out of constant
  // sizes (kernel by kernel, with a library call per copy: (1, 256, 2, 2) -> 256, nearly all
  // transform, 1.53 -> 1.45 ms at AVX2, 1 thread). What is left is writing U, 16/9 the size of
  // the weights, on every call: about half of a batch-1 (1, 256, 14, 14) -> 256 layer.
  parallel_for(Kp / MR, 100.0 * Kp * s.C, [&](int64_t panel) {
    float* dst = up + panel * MR * s.C;
    const int nk = static_cast<int>(std::min<int64_t>(MR, s.K - panel * MR));
    float g[9][16] = {}, t[4][3][16], buf[16][16];  // rows past K stay zero
    for (int64_t c = 0; c < s.C; ++c) {
      for (int kk = 0; kk < nk; ++kk)
        for (int i = 0; i < 9; ++i) g[i][kk] = w[((panel * MR + kk) * s.C + c) * 9 + i];
      for (int j = 0; j < 3; ++j)  // G g
        for (int l = 0; l < 16; ++l) {
          t[0][j][l] = g[j][l];
          t[1][j][l] = 0.5f * (g[j][l] + g[3 + j][l] + g[6 + j][l]);
          t[2][j][l] = 0.5f * (g[j][l] - g[3 + j][l] + g[6 + j][l]);
          t[3][j][l] = g[6 + j][l];
        }
      for (int i = 0; i < 4; ++i)  // (G g) G^T
        for (int l = 0; l < 16; ++l) {
          buf[4 * i][l] = t[i][0][l];
          buf[4 * i + 1][l] = 0.5f * (t[i][0][l] + t[i][1][l] + t[i][2][l]);
          buf[4 * i + 2][l] = 0.5f * (t[i][0][l] - t[i][1][l] + t[i][2][l]);
          buf[4 * i + 3][l] = t[i][2][l];
        }
      float* d = dst + c * MR;
      if (MR == 8)
        for (int e = 0; e < 16; ++e) std::memcpy(d + e * Kp * s.C, buf[e], 8 * sizeof(float));
      else if (MR == 6)
        for (int e = 0; e < 16; ++e) std::memcpy(d + e * Kp * s.C, buf[e], 6 * sizeof(float));
      else
        for (int e = 0; e < 16; ++e) std::memcpy(d + e * Kp * s.C, buf[e], MR * sizeof(float));
    }
  });
  if (dh == 1 && dw == 1 && s.K * s.C > 256 * 256)
    return winograd_forward_grouped(y, x, up, b, s, TY, TX);
  // Tile rows per item: V and M of one item (16 x (C + K) x tiles floats) near 640 KiB.
  const int64_t per_row = 16 * (s.C + s.K) * TX * dw * 4;
  const int64_t tr = std::max<int64_t>(1, std::min(TY, (640 * 1024) / per_row));
  const int64_t nblk = (TY + tr - 1) / tr;
  const int64_t Tb = tr * dw * TX;            // tiles per item (at most)
  const int64_t Wb = 2 * TX + 34, nrows = 2 * tr + 2;  // wino_in_rows' rows, at most
  thread_local std::vector<int64_t> voff;
  voff.resize(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c) voff[c] = c * Tb;
  const int64_t* voffp = voff.data();
  int64_t base[16], depth[16];  // the 16 GEMMs: U_e at up + Kp * e * C, depth C each
  for (int e = 0; e < 16; ++e) base[e] = e * s.C, depth[e] = s.C;
  std::atomic<bool> finite{true};
  parallel_for(s.N * dh * nblk, 2.0 * s.N * s.K * s.C * 9 * PQ, [&](int64_t item) {
    const int64_t n = item / (dh * nblk), al = item / nblk % dh;
    const int64_t ty0 = item % nblk * tr, ty1 = std::min(TY, ty0 + tr);
    const int64_t rows = ty1 - ty0, nt = rows * dw * TX;
    float* xb = scratch(Buf::wino_rows, s.C * nrows * dw * Wb);
    float* v = scratch(Buf::wino_v, 16 * s.C * Tb);
    float* m = scratch(Buf::wino_m, 16 * s.K * Tb);
    wino_in_rows(v, Tb, xb, x, s, n, al, ty0, ty1, TX);
    winograd_gemms(m, up, v, base, depth, 16, s.K, Tb, nt, voffp);
    if (dh == 1 && dw == 1) {
      if (!winograd_out_rows(kt.wino_out_row, y, m, b, s, n, ty0, ty1, TX, Tb)) finite = false;
      return;
    }
    // the column phases' output rows side by side (Qm floats apart), then interleaved into y
    thread_local std::vector<float> out;
    out.resize(static_cast<size_t>(2 * dw * Qm));
    const int64_t Pa = (s.P - al + dh - 1) / dh;  // this row phase's output rows
    bool ok = true;
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t ty = ty0; ty < ty1 && 2 * ty < Pa; ++ty) {
        const bool two = 2 * ty + 1 < Pa;
        for (int64_t be = 0; be < dw; ++be)
          ok &= kt.wino_out_row(out.data() + be * Qm, two ? out.data() + (dw + be) * Qm : nullptr,
                                m + k * Tb + ((ty - ty0) * dw + be) * TX, s.K * Tb, TX,
                                (s.Q - be + dw - 1) / dw, b ? b[k] : 0.f);
        for (int64_t i = 0; i < (two ? 2 : 1); ++i)
          kt.phase_merge_row(y + ((n * s.K + k) * s.P + al + (2 * ty + i) * dh) * s.Q,
                             out.data() + i * dw * Qm, Qm, dw, 0, s.Q);
      }
    if (!ok) finite = false;
  });
  return finite;
}

// Tile rows per item of winograd_s2_forward: the fewest computed GEMM columns (a tail of up to
// 16 runs as a half tile), V and M of an item (25 C + 9 K floats per tile) within about 1.25
// MiB. *waste: those columns per tile of the output.
int64_t winograd_s2_band(const Conv2dShape& s, const KernelTable& kt, double* waste) {
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, NR = kt.nr;
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
  *waste = best / double(TY * TX);
  return tr;
}

// Rows of few tiles leave GEMM columns idle (up to 30 % on 7 tiles a row): then the direct path
// is as fast. Not at AVX2, whose direct tiles have 8 lanes: there this path still leads with
// 31 % idle (an AVX2-only AMD EPYC, Zen 3, forced, 2 threads, medians of 7, 14 x 14 outputs,
// ms: (8, 128, 28, 28) -> 256 5.79 against im2col_gemm's 7.06 and direct's 7.80, (8, 192, 28,
// 28) -> 192 6.86 against 9.03 and 9.79, (4, 256, 28, 28) -> 512 13.2 against 14.8 and 15.5;
// 10 x 10, 28 % idle, (8, 128, 20, 20) -> 256 6.26 against 6.76 and 7.42; level with
// im2col_gemm at (1, 128, 28, 28) -> 256 and 12 x 12 (8, 256, 24, 24) -> 512, 26.7 against
// 25.6, and direct's 29.5).
bool winograd_s2_columns_pay(const Conv2dShape& s, const KernelTable& kt) {
  double waste;
  winograd_s2_band(s, kt, &waste);
  return waste <= (kt.lanes == 8 ? 1.35 : 1.2);
}

// 3x3, stride 2, enough channels: the stride-2 sum split by input phase and each part done the
// Winograd way. Along one axis a tile's outputs y0, y1 read padded inputs d0 .. d4 as
//   y0 = m_A + m_B,  y1 = m_B + m_C,  m_A = (d0 - d2) g0 + d1 g1,  m_B = d2 (g0 + g2),
//   m_C = (d4 - d2) g2 + d3 g1:
// five products for two outputs instead of six, 25 instead of 36 per 2x2 tile. Each of the
// 3 x 3 (row pattern, column pattern) pairs e is one GEMM, M_e (K x tiles) = U_e V_e, over a
// reduction of C times the pair's item count (1, 2 or 4 per channel); each 2x2 output is a sum
// of four M_e. The input transform reads the image rows in place. Items are (image, band of
// tile rows), bands chosen to waste the fewest GEMM columns (winograd_s2_band; the planner
// leaves layers whose columns would sit idle too often to direct, winograd_s2_columns_pay).
// Returns false if an output came out NaN or infinite (the caller recomputes the direct way:
// the transforms subtract input values).
bool winograd_s2_forward(float* y, const float* x, const float* w, const float* b,
                         const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, PQ = s.P * s.Q;
  const int MR = kt.mr;
  double waste;
  const int64_t tr = winograd_s2_band(s, kt, &waste);
  // Items per pattern: A = {A0, A1}, B = {B0}, C = {C0, C1} (items 0 .. 4); item i sums the
  // kernel rows (or columns) kRows[i]: g0, g1, g0 + g2, g2, g1.
  static constexpr int kFirst[3] = {0, 2, 3}, kCount[3] = {2, 1, 2};
  static constexpr int kPattern[5] = {0, 0, 1, 2, 2};
  static constexpr int kRows[5][2] = {{0, -1}, {1, -1}, {0, 2}, {2, -1}, {1, -1}};
  int64_t depth[9], ebase[10];  // per pattern pair e: reduction length, offset (in C rows)
  ebase[0] = 0;
  for (int e = 0; e < 9; ++e) {
    depth[e] = s.C * kCount[e / 3] * kCount[e % 3];
    ebase[e + 1] = ebase[e] + depth[e];
  }
  // U_e (K x depth_e, column (c, ri, ci)) written straight into MR-row panels, one block per e:
  // element (k, d) of block e at up + Kp * ebase[e] + k / MR * MR * depth_e + d * MR + k % MR.
  const int64_t Kp = round_up(s.K, MR), npanel = Kp / MR;
  float* up = scratch(Buf::wino_weights, Kp * ebase[9]);
  // Items are panels. Each (k, c) kernel's 9 taps are read once for its 25 values, item pair
  // (ri, ci) summing kernel rows kRows[ri] and columns kRows[ci] (in that order: the bits of
  // summing element by element, whose k-strided reads and loops took 16-19 % of a (8, 64, 56,
  // 56) -> 128 layer).
  parallel_for(npanel, 25.0 * Kp * s.C, [&](int64_t p) {
    const int64_t k0 = p * MR;
    float* at[25];  // value (ri, ci) of channel 0, row k0
    int64_t cstep[25];
    for (int ri = 0; ri < 5; ++ri)
      for (int ci = 0; ci < 5; ++ci) {
        const int pr = kPattern[ri], pc = kPattern[ci], e = 3 * pr + pc;
        at[ri * 5 + ci] = up + Kp * ebase[e] + k0 * depth[e] +
                          ((ri - kFirst[pr]) * kCount[pc] + ci - kFirst[pc]) * MR;
        cstep[ri * 5 + ci] = kCount[pr] * kCount[pc] * MR;
      }
    for (int64_t c = 0; c < s.C; ++c)
      for (int kk = 0; kk < MR; ++kk) {
        const int64_t k = k0 + kk;
        float g[9] = {};
        if (k < s.K) std::copy(w + (k * s.C + c) * 9, w + (k * s.C + c) * 9 + 9, g);
#pragma GCC unroll 5
        for (int ri = 0; ri < 5; ++ri)
#pragma GCC unroll 5
          for (int ci = 0; ci < 5; ++ci) {
            float u = 0.f;
#pragma GCC unroll 2
            for (int a = 0; a < 2; ++a)
#pragma GCC unroll 2
              for (int q = 0; q < 2; ++q)
                if (kRows[ri][a] >= 0 && kRows[ci][q] >= 0) u += g[3 * kRows[ri][a] + kRows[ci][q]];
            at[ri * 5 + ci][c * cstep[ri * 5 + ci] + kk] = u;
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
    float* v = scratch(Buf::wino_v, ebase[9] * Tb);
    float* m = scratch(Buf::wino_m, 9 * s.K * Tb);
    for (int64_t c = 0; c < s.C; ++c) {
      const float* plane = x + (n * s.C + c) * s.H * s.W;
      if (c + 1 < s.C)
        prefetch_rows(plane + s.H * s.W, s.H, s.W, 4 * ty0 - s.ph, 4 * (ty1 - ty0) + 1);
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

// The GEMMs of a Winograd weight gradient: for e < ne, part[e] (K x D) += A_e B_e^T over `depth`
// tiles, A_e packed in MR-row panels (Kp x Tg floats per e), B_e in NR-column panels (Dp x Tg;
// the last panel's columns past D, which the packing leaves, are zeroed here); `accumulate` false
// for the first group of a chunk.
void winograd_dw_gemms(float* part, const float* ap, float* bp, int ne, int64_t K, int64_t D,
                       int64_t Tg, int64_t depth, bool accumulate) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t Kp = round_up(K, MR), Dp = round_up(D, NR), kcmax = gemm_kc(Tg);
  if (Dp > D)
    for (int e = 0; e < ne; ++e)
      for (int64_t t = 0; t < depth; ++t)
        std::fill(bp + e * Dp * Tg + (Dp - NR) * Tg + t * NR + D % NR,
                  bp + e * Dp * Tg + (Dp - NR) * Tg + (t + 1) * NR, 0.f);
  for (int e = 0; e < ne; ++e)
    for (int64_t pc = 0; pc < depth; pc += kcmax) {
      const int64_t kc = std::min(kcmax, depth - pc);
      for (int64_t jr = 0; jr < D; jr += NR)
        for (int64_t ir = 0; ir < K; ir += MR)
          kt.gemm(kc, ap + e * Kp * Tg + ir * Tg + pc * MR, bp + e * Dp * Tg + jr * Tg + pc * NR,
                  part + e * K * D + ir * D + jr, D,
                  static_cast<int>(std::min<int64_t>(MR, K - ir)),
                  static_cast<int>(std::min<int64_t>(NR, D - jr)), accumulate || pc > 0, nullptr);
    }
}

// The weight gradient of a 3x3 stride-1 layer by Winograd F(2x2, 3x3): with V_e = (B^T d B)_e
// of each tile's 4x4 input patch (the forward's wino_in_row) and Y_e = (A dY A^T)_e of its 2x2
// block of dy, dU_e (K x C) = sum over tiles of Y_e V_e^T, one GEMM per e and group of images
// (the tiles are the reduction), and dW = G^T dU G per (k, c): 16 products per tile and channel
// pair instead of 36. The transforms go through a small buffer straight into the micro-kernel's
// packed panels. Items are chunks of images, their partial sums added in chunk order; the last
// step runs in double. Returns false (the next row recomputes) if a weight gradient came out NaN
// or infinite: the transforms subtract inputs.
bool winograd3_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t TX = (s.Q + 1) / 2, TY = (s.P + 1) / 2, T = TX * TY, D = s.C;
  const int64_t Kp = round_up(s.K, MR), Dp = round_up(D, NR);
  const int64_t Wr = 2 * TX + 34;  // padded input row: the tiles' columns, then wino_in_row's slack
  const int64_t nrows = 2 * TY + 2;  // padded input rows -ph .. -ph + 2 TY + 1
  // chunks of 16+ images (adding up the partials of 8-image chunks took 6 % of the time)
  auto pack = [&](int64_t n, int64_t t0, int64_t Tg, float* ap, float* bp) {
    float* rows = scratch(Buf::wino_rows,
                          NR * nrows * Wr + 16 * std::max<int64_t>(NR * TX, MR * TX) + 4 * TX);
    float* tmp = rows + NR * nrows * Wr;
    for (int64_t c0 = 0; c0 < D; c0 += NR) {  // the channels of one B panel
      const int64_t nc = std::min<int64_t>(NR, D - c0);
      for (int64_t c = c0; c < c0 + nc; ++c)
        pad_rows(rows + (c - c0) * nrows * Wr, Wr, x + (n * s.C + c) * s.H * s.W, s.H, s.W,
                 -s.ph, nrows, s.pw);
      float* panel = bp + c0 * Tg;
      for (int64_t ty = 0; ty < TY; ++ty) {
        for (int64_t c = c0; c < c0 + nc; ++c) {  // tmp: [c - c0][e][tx]
          const float* r = rows + ((c - c0) * nrows + 2 * ty) * Wr;
          const float* r4[4] = {r, r + Wr, r + 2 * Wr, r + 3 * Wr};
          kt.wino_in_row(tmp + (c - c0) * 16 * TX, TX, r4, TX);
        }
        for (int e = 0; e < 16; ++e)
          transpose_into(panel + e * Dp * Tg + (t0 + ty * TX) * NR, NR, tmp + e * TX, 16 * TX,
                         nc, TX);
      }
    }
    // dy rows 2ty, 2ty + 1 split into even and odd columns (zero past P and Q): rows of TX
    float* ev = tmp + 16 * std::max<int64_t>(NR * TX, MR * TX);
    for (int64_t k0 = 0; k0 < Kp; k0 += MR)
      for (int64_t ty = 0; ty < TY; ++ty) {
        for (int64_t kk = 0; kk < MR; ++kk) {  // tmp: [k - k0][e][tx]
          float* o = tmp + kk * 16 * TX;
          const int64_t k = k0 + kk;
          if (k >= s.K) {
            std::fill(o, o + 16 * TX, 0.f);
            continue;
          }
          split_rows(ev, 2 * TX, TX, dy + (n * s.K + k) * s.P * s.Q, s.P, s.Q, 2 * ty, 1, 2, 0,
                     2, TX);
          // Y = A dY A^T, A's rows (1, 0), (1, 1), (1, -1), (0, -1): down, then across
          const float *e0 = ev, *o0 = ev + TX, *e1 = ev + 2 * TX, *o1 = ev + 3 * TX;
          for (int i = 0; i < 4; ++i) {
            float* z = o + i * 4 * TX;
            for (int64_t tx = 0; tx < TX; ++tx) {
              const float a = i == 0 ? e0[tx] : i == 1 ? e0[tx] + e1[tx]
                              : i == 2 ? e0[tx] - e1[tx] : -e1[tx];
              const float b = i == 0 ? o0[tx] : i == 1 ? o0[tx] + o1[tx]
                              : i == 2 ? o0[tx] - o1[tx] : -o1[tx];
              z[tx] = a;
              z[TX + tx] = a + b;
              z[2 * TX + tx] = a - b;
              z[3 * TX + tx] = -b;
            }
          }
        }
        for (int e = 0; e < 16; ++e)
          transpose_into(ap + e * Kp * Tg + k0 * Tg + (t0 + ty * TX) * MR, MR, tmp + e * TX,
                         16 * TX, MR, TX);
      }
  };
  int64_t nparts = 0;
  const float* parts = winograd_dw_sum(s, 16, D, T, 16,
                                       2.0 * s.N * s.K * s.C * 16 * TX * TY * 4, pack, &nparts);
  return winograd3_dw_from_du(dw, parts, nparts, s);
}

// dW = G^T dU G per (k, c) in double (KernelTable::wino3_dw_from_du), dU_e at
// [(e * K + k) * C + c] of the sum of the nparts partial sums (16 K C floats apart), added in
// order while they are read (a pass of their own over 16 K C floats, then one more over the
// sum, took a fifth of a 512-channel layer's weight gradient). Returns false if a value came out
// NaN or infinite.
bool winograd3_dw_from_du(float* dw, const float* parts, int64_t nparts, const Conv2dShape& s) {
  const int64_t es = s.K * s.C, ps = 16 * es;
  std::atomic<bool> finite{true};
  parallel_for(s.K, 100.0 * nparts * s.K * s.C, [&](int64_t k) {
    if (!g_kernels->wino3_dw_from_du(dw + k * s.C * 9, parts + k * s.C, es, ps, nparts, s.C))
      finite = false;
  });
  return finite;
}

// The weight gradient of a 3x3 stride-1 layer by Winograd F(2x2, 3x3) with one image per
// vector lane (KernelTable::wino_lanes_dw_item): dU_e (K x C) = the sum over every image's tiles
// of (A dY A^T)_e (B^T d B)_e, every product a whole vector whatever the channel counts, then dW
// = G^T dU G in double (winograd3_dw_from_du). Items are (16 images, run of tile rows), 8 or more
// where the rows allow, fixed by the shape; their sums are added in item order.
bool winograd_lanes_weight_grad(float* dw, const float* dy, const float* x,
                                const Conv2dShape& s) {
  const int64_t TY = (s.P + 1) / 2, TX = (s.Q + 1) / 2, groups = (s.N + 15) / 16;
  const int64_t splits = std::min(TY, (8 + groups - 1) / groups);
  const int64_t tr = (TY + splits - 1) / splits, nsplit = (TY + tr - 1) / tr;
  const int64_t items = groups * nsplit, UD = 16 * s.K * s.C;
  float* du = scratch(Buf::dw_partials, items * UD);
  const WinoLanesDwArgs a{x, dy, s.N, s.C, s.H, s.W, s.K, s.P, s.Q, s.ph, s.pw, nullptr, nullptr};
  parallel_for(items, 2.0 * s.N * s.K * s.C * 16 * TY * TX, [&](int64_t item) {
    WinoLanesDwArgs ai = a;
    ai.buf = scratch(Buf::wino_rows, wino_lanes_dw_buf_floats(a));
    ai.du = du + item * UD;
    const int64_t ty0 = item % nsplit * tr;
    g_kernels->wino_lanes_dw_item(ai, item / nsplit * 16, ty0, std::min(TY, ty0 + tr));
  });
  return winograd3_dw_from_du(dw, du, items, s);
}

// 3x3 or 5x5, stride 1, batches of 16+ images: Winograd F(2x2, 3x3) or F(2x2, 5x5) with one
// image per vector lane (KernelTable::wino_lanes_item): 16 multiplies per (2x2 outputs, c, k)
// instead of 36, or 36 instead of 100. Items are (16 images, band of tile rows); the weights
// are transformed once, in double precision. Returns false if an output came out NaN or infinite
// (the caller then recomputes the direct way: the transforms subtract input values, so an Inf
// in x could give NaN where the definition has Inf).
// winograd_lanes_forward_bn also applies bn (not null only on planes of bn_terms_by_block's
// size: an evaluation-mode batch norm) to the outputs as each item moves them out of the lanes.
bool winograd_lanes_forward(float* y, const float* x, const float* w, const float* b,
                            const Conv2dShape& s) {
  return winograd_lanes_forward_bn(y, x, w, b, s, nullptr);
}

bool winograd_lanes_forward_bn(float* y, const float* x, const float* w, const float* b,
                               const Conv2dShape& s, const BnTerms* bn) {
  const int r = static_cast<int>(s.R), A = r + 1, RS = r * r;
  const int64_t TY = (s.P + 1) / 2, Kp = round_up(s.K, 8), CRS = s.C * RS;
  float* u = scratch(Buf::wino_weights, A * A * s.C * Kp);
  // u = G g G^T per (k, c), in double. r = 3: G's rows are (1, 0, 0), (1, 1, 1) / 2,
  // (1, -1, 1) / 2, (0, 0, 1). r = 5: (1, 0, 0, 0, 0), (1, 1, 1, 1, 1) / 3,
  // (-1, 1, -1, 1, -1) / 3, -(16, 8, 4, 2, 1) / 15, (1, -2, 4, -8, 16) / 15, (0, 0, 0, 0, 1).
  auto g_1d = [r](const double* g, int64_t step, double* o) {  // o[i] = (G g)[i]
    if (r == 3) {
      const double g0 = g[0], g1 = g[step], g2 = g[2 * step];
      o[0] = g0;
      o[1] = (g0 + g1 + g2) * 0.5;
      o[2] = (g0 - g1 + g2) * 0.5;
      o[3] = g2;
      return;
    }
    const double g0 = g[0], g1 = g[step], g2 = g[2 * step], g3 = g[3 * step], g4 = g[4 * step];
    o[0] = g0;
    o[1] = (g0 + g1 + g2 + g3 + g4) * (1 / 3.);
    o[2] = (-g0 + g1 - g2 + g3 - g4) * (1 / 3.);
    o[3] = (16 * g0 + 8 * g1 + 4 * g2 + 2 * g3 + g4) * (-1 / 15.);
    o[4] = (g0 - 2 * g1 + 4 * g2 - 8 * g3 + 16 * g4) * (1 / 15.);
    o[5] = g4;
  };
  parallel_for(Kp, 40.0 * s.C * A * A * Kp, [&](int64_t k) {
    for (int64_t c = 0; c < s.C; ++c) {
      double g[25] = {}, t[6][5], v[6];  // t = G g (rows of G applied down the columns of g)
      if (k < s.K)
        for (int i = 0; i < RS; ++i) g[i] = w[k * CRS + c * RS + i];
      for (int j = 0; j < r; ++j) {
        double col[6];
        g_1d(g + j, r, col);
        for (int i = 0; i < A; ++i) t[i][j] = col[i];
      }
      for (int i = 0; i < A; ++i) {
        g_1d(t[i], 1, v);
        for (int j = 0; j < A; ++j)
          u[((i * A + j) * Kp + k / 8 * 8) * s.C + c * 8 + k % 8] = static_cast<float>(v[j]);
      }
    }
  });
  WinoLanesArgs a{x, y, s.N, s.C, s.H, s.W, s.K, s.P, s.Q, s.ph, s.pw, u, Kp, b, nullptr, r, bn};
  // Tile rows per item: its buffers near 512 KiB.
  int64_t tr = TY;
  while (tr > 1 && 4 * wino_lanes_buf_floats(a, tr) > 512 * 1024) tr = (tr + 1) / 2;
  const int64_t nblk = (TY + tr - 1) / tr, groups = (s.N + 15) / 16;
  std::atomic<bool> finite{true};
  parallel_for(groups * nblk, 1.0 * s.N * s.K * CRS * s.P * s.Q, [&](int64_t item) {
    WinoLanesArgs ai = a;
    ai.buf = scratch(Buf::wino_rows, wino_lanes_buf_floats(a, tr));
    const int64_t ty0 = item % nblk * tr;
    if (!g_kernels->wino_lanes_item(ai, item / nblk * 16, ty0, std::min(TY, ty0 + tr)))
      finite = false;
  });
  return finite;
}

// Whether the lanes Winograd beats the direct paths (~87 % of peak) on this shape, by a cost
// model in multiply-add times per 16 tiles (fitted on this machine): the products, A^2 C Kp,
// plus two per (e, k) for their stores; for the transforms and transposes ~300 C and ~100 K
// at 5x5, ~100 C and ~100 K at 3x3 (200 each where KernelTable::wide_fma: forced, 2 threads,
// AMD EPYC Zen 5, ms: (128, 16, 32, 32) -> 16 direct 2.05 against 2.55, where Zen 4 measured
// 3.13 against 2.72); every group of 16 images paid in full. It must save 15 %.
// (3x3, forced, 2 threads, AMD EPYC Zen 4, against the best other row: ResNet-20's layers at
// batch 128 (128, 16, 32, 32) 2.72 ms against direct's 3.13, (128, 32, 16, 16) 2.20 against
// kvec's 2.87, (128, 64, 8, 8) 1.98 against 2.87; (16, 64, 56, 56) 11.4 against winograd3's
// 12.3, (32, 128, 14, 14) 5.4 against 6.6; the model declines (128, 3, 32, 32) -> 16, 0.94
// against 0.62, and (64, 6, 14, 14) -> 16, 0.11 against 0.15, which it could take.) The
// transformed weights (A^2 C Kp floats) are bounded, and an item's buffers within 16 MiB: at 5x5
// 36 Ki floats; at 3x3 16 x 192 x 192, past the 1 MiB L2, where it still beats winograd3 (2
// threads, medians of 9 interleaved calls: (64, 128, 8, 8) 3.74 ms against 4.81, (128, 128, 8,
// 8) 7.10 against 9.18, (16, 128, 16, 16) 3.56 against 4.50, (32, 128, 8, 8) -> 256 3.74
// against 4.48, (16, 192, 8, 8) 2.92 against 3.13; but (16, 256, 8, 8) 6.4-6.6 against
// 5.7-6.3, (32, 256, 8, 8) 9.57 against 8.90). At 5x5 past 36 Ki floats (32 x 32 channels), up
// to 256 x 256 channels on planes 11+ wide each way: on smaller ones its 2x2 tiles and the
// padding's products (which kvec skips) outweigh the saving (2 threads, medians of 5-7
// interleaved rounds, against kvec, ms: (16, 64, 14, 14) -> 64 1.97 against 2.87, (16, 128,
// 14, 14) -> 128 6.67 against 10.18, (16, 256, 14, 14) -> 256 30.8 against 48.4, (32, 128, 28,
// 28) -> 128 43.4 against 95.8, (16, 24, 27, 27) -> 64 2.42 against 4.86, (16, 64, 12, 12) ->
// 64 1.84 against 2.08, (32, 32, 11, 11) -> 32 0.72 against 1.07; but (16, 64, 10, 10) -> 64
// 1.51 against 1.40, (16, 32, 7, 7) -> 64 0.60 against 0.36, (16, 256, 8, 8) 13.1 against
// 13.5, (16, 512, 7, 7) 60 against 50).
bool winograd_lanes_pays(const Conv2dShape& s, const KernelTable& kt) {
  if (s.R != s.S || (s.R != 3 && s.R != 5) || s.sh != 1 || s.sw != 1 || s.N < 16 || s.P < 2 ||
      s.Q < 2)
    return false;
  const int64_t Kp = round_up(s.K, 8), A = s.R + 1;
  const int64_t wfloats = A * A * s.C * Kp;
  if (s.R == 3 ? wfloats > 16 * 192 * 192
               : wfloats > 36 * 1024 && (wfloats > 36 * 256 * 256 || std::min(s.P, s.Q) < 11))
    return false;
  const WinoLanesArgs a{nullptr, nullptr, s.N, s.C, s.H, s.W, s.K, s.P, s.Q, s.ph, s.pw, nullptr,
                        Kp, nullptr, nullptr, static_cast<int>(s.R)};
  if (wino_lanes_buf_floats(a, 1) > 4 * 1024 * 1024) return false;  // rows too wide for buffers
  const double groups = (s.N + 15) / 16, C = s.C, K = s.K;
  const double moves = kt.wide_fma ? 200 : 100;  // 3x3, per input and per output channel
  const double cm = s.R == 5 ? 300 : moves, km = s.R == 5 ? 100 : moves;
  const double wino = groups * (A * A * Kp * (C + 2) + cm * C + km * K);
  const double direct = s.N / 16.0 * 4 * s.R * s.S * C * K / 0.87;
  return wino < 0.85 * direct;
}

}  // namespace conv
}  // namespace convkit
