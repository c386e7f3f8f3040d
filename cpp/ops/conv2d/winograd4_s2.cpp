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
// and each 2-tap correlation is done the Winograd way. The input gradient and the weight
// gradient use F(2, 2): along one axis a tile's outputs y0, y1 come from inputs d0, d1, d2 and
// taps g0, g1 as
//   y0 = mA + mB,  y1 = mB + mC,  mA = (d0 - d1) g0,  mB = d1 (g0 + g1),  mC = (d2 - d1) g1:
// 9 products per 2x2 tile instead of 16. Each pattern pair e = 3 pr + pc (patterns A, B, C) is
// one GEMM of the transformed weights U_e by the transformed inputs V_e (tiles as columns), and
// the output transform is KernelTable::wino_s2_out_row's (the same A^T = (1 1 0; 0 1 1)).
// The forward uses F(4, 2), four outputs from five inputs, y = A^T [(G g) . (B^T d)] at the
// Toom-Cook points 0, 1, -1, 2, -2:
//   B^T d = (4 d0 - 5 d2 + d4,  4 (d1 + d2) - (d3 + d4),  4 (d2 - d1) + (d3 - d4),
//            2 (d3 - d1) + (d4 - d2),  (d4 - d2) - 2 (d3 - d1))
//   G g   = (g0 / 4,  (g0 + g1) / 6,  (g0 - g1) / 6,  (g0 + 2 g1) / 24,  (g0 - 2 g1) / 24)
//   A^T m = (m0 + m1 + m2 + m3 + m4,  m1 - m2 + 2 (m3 - m4),  m1 + m2 + 4 (m3 + m4),
//            m1 - m2 + 8 (m3 - m4)):
// 25 products per 4x4 tile against F(2, 2)'s 36, for a float32 error (simulated with 512 taps an
// output) of 1.6e-6 of the largest output against 0.8e-6 for F(2, 2) and 0.9e-6 for the direct
// sum in order. F(4, 2) in the other two directions measured no faster (AMD EPYC Zen 4, 1
// thread, (16, 64, 32, 32) -> 128: input gradient 7.5-8.2 ms against 8.1, weight gradient 8.6
// against 7.8): their transforms, in SSE vectors, took what the GEMMs saved, and the weight
// gradient's 25 dU blocks cost more to add up than 9.
// The transforms add and subtract input values: an Inf in the input can give NaN where the
// definition has Inf, so a non-finite output makes the path decline and the next row recomputes
// the layer. Items are (image, band of tile rows), for the forward (group of images, band), for
// the weight gradient chunks of images; the blocking depends on the shape only.
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
inline void transform_kernel(float* u, int64_t us, float q00, float q01, float q10, float q11) {
  const float r0[3] = {q00, q00 + q01, q01}, r1[3] = {q10, q10 + q11, q11};
  for (int j = 0; j < 3; ++j) {
    u[j * us] = r0[j];
    u[(3 + j) * us] = r0[j] + r1[j];
    u[(6 + j) * us] = r1[j];
  }
}

// F(4, 2)'s kernel transform along one axis for 16 kernels side by side: o[0..4][i] = G (g0[i],
// g1[i]) (in float; the error simulated above is float's).
constexpr float kSixth = 1.f / 6, k24th = 1.f / 24;
inline void kernel_1d(float (*o)[16], const float* g0, const float* g1) {
  for (int i = 0; i < 16; ++i) {
    o[0][i] = g0[i] * 0.25f, o[1][i] = (g0[i] + g1[i]) * kSixth, o[2][i] = (g0[i] - g1[i]) * kSixth;
    o[3][i] = (g0[i] + 2.f * g1[i]) * k24th, o[4][i] = (g0[i] - 2.f * g1[i]) * k24th;
  }
}

// One MR-row panel of transformed weights: for depth indices d < depth, panel rows i < MR and
// kernel phases f < nph, q(d, i, f, g) gives the 2x2 kernel g (zeros for rows past the
// matrix); its NE values (9 for F(2, 2), 25 for F(4, 2)) go to dst + (NE f + e) * estride +
// d * MR + i. Staged 16 depth indices at a time: written one by one, the NE nph streams (whole
// weight blocks apart, e.g. 32 KiB) evict each other from L1 and the transform costs 20 % of the
// GEMMs.
template <int NE, class Q>
void transform_panel(float* dst, int64_t estride, int nph, int64_t depth, int MR, Q&& q) {
  constexpr int64_t kB = 16;
  thread_local std::vector<float> tmp;
  tmp.resize(static_cast<size_t>(NE * nph * kB * MR));
  for (int64_t d0 = 0; d0 < depth; d0 += kB) {
    const int64_t nd = std::min(kB, depth - d0);
    for (int64_t d = d0; d < d0 + nd; ++d)
      for (int f = 0; f < nph; ++f) {
        float* u = tmp.data() + (NE * f * kB + d - d0) * MR;
        if constexpr (NE == 9) {
          for (int i = 0; i < MR; ++i) {
            float g[4];
            q(d, i, f, g);
            transform_kernel(u + i, kB * MR, g[0], g[1], g[2], g[3]);
          }
        } else {
          // F(4, 2): the MR kernels side by side (the loops over i vectorise; one kernel at a
          // time, the transform took 16 % of a (16, 128, 16, 16) -> 256 layer)
          float g[4][16] = {};
          for (int i = 0; i < MR; ++i) {
            float gi[4];
            q(d, i, f, gi);
            for (int j = 0; j < 4; ++j) g[j][i] = gi[j];
          }
          float r0[5][16], r1[5][16], c[5][16];  // along the columns, then down the rows
          kernel_1d(r0, g[0], g[1]);
          kernel_1d(r1, g[2], g[3]);
          for (int j = 0; j < 5; ++j) {
            kernel_1d(c, r0[j], r1[j]);
            for (int ii = 0; ii < 5; ++ii)
              std::memcpy(u + (5 * ii + j) * kB * MR, c[ii], sizeof(float) * MR);
          }
        }
      }
    for (int e = 0; e < NE * nph; ++e)
      std::memcpy(dst + e * estride + d0 * MR, tmp.data() + e * kB * MR, sizeof(float) * nd * MR);
  }
}

// Four tiles at a time in a vector (one SSE register, which every x86-64 has), the rest one by
// one; the same arithmetic either way.
typedef float V4 __attribute__((vector_size(16)));
typedef int I4 __attribute__((vector_size(16)));
inline void load(V4& v, const float* p) { std::memcpy(&v, p, sizeof v); }
inline void load(float& v, const float* p) { v = *p; }
inline void store(float* p, const V4& v) { std::memcpy(p, &v, sizeof v); }
inline void store(float* p, float v) { *p = v; }

// ---- the forward's F(4, 2) -----------------------------------------------------------------
constexpr int kE = 25;  // its pattern pairs (5 x 5) of a tile

// F(4, 2) along one axis: B^T d (input), A^T m (output).
template <class T>
inline void in_1d(T* v, const T* d) {
  const T s13 = d[3] - d[1], s24 = d[4] - d[2];
  v[0] = (d[0] * 4.f - d[2] * 5.f) + d[4];
  v[1] = (d[1] + d[2]) * 4.f - (d[3] + d[4]);
  v[2] = (d[2] - d[1]) * 4.f + (d[3] - d[4]);
  v[3] = s13 * 2.f + s24;
  v[4] = s24 - s13 * 2.f;
}
template <class T>
inline void out_1d(T* y, const T* m) {
  const T p12 = m[1] + m[2], d12 = m[1] - m[2], p34 = m[3] + m[4], d34 = m[3] - m[4];
  y[0] = (m[0] + p12) + p34;
  y[1] = d12 + d34 * 2.f;
  y[2] = p12 + p34 * 4.f;
  y[3] = d12 + d34 * 8.f;
}
// Four tiles' values a run at a time from one vector each, transposed so that lane l is tile
// t + l's (the tiles of a run may lie in different rows and images).
inline void transpose4(V4& a, V4& b, V4& c, V4& d) {
  const V4 t0 = __builtin_shuffle(a, b, I4{0, 4, 1, 5});
  const V4 t1 = __builtin_shuffle(a, b, I4{2, 6, 3, 7});
  const V4 t2 = __builtin_shuffle(c, d, I4{0, 4, 1, 5});
  const V4 t3 = __builtin_shuffle(c, d, I4{2, 6, 3, 7});
  a = __builtin_shuffle(t0, t2, I4{0, 1, 4, 5}), b = __builtin_shuffle(t0, t2, I4{2, 3, 6, 7});
  c = __builtin_shuffle(t1, t3, I4{0, 1, 4, 5}), d = __builtin_shuffle(t1, t3, I4{2, 3, 6, 7});
}
// Tile t's five inputs p[off[t] + ci] (one tile, or four in the lanes).
inline void load5(float* d, const float* p, const int64_t* off, int64_t t) {
  for (int i = 0; i < 5; ++i) d[i] = p[off[t] + i];
}
inline void load5(V4* d, const float* p, const int64_t* off, int64_t t) {
  const float* q[4] = {p + off[t], p + off[t + 1], p + off[t + 2], p + off[t + 3]};
  for (int l = 0; l < 4; ++l) load(d[l], q[l]);
  transpose4(d[0], d[1], d[2], d[3]);
  d[4] = V4{q[0][4], q[1][4], q[2][4], q[3][4]};
}

// The 25 transformed inputs of tile t (or t .. t + 3), v[e * vs + t] (e = 5 pr + pc), from its
// inputs d(ri, ci) = p[off[t] + ri * rs + ci]: along the columns, then down the rows.
template <class T>
inline void transform_tile42(float* v, int64_t vs, const float* p, int64_t rs,
                             const int64_t* off, int64_t t) {
  T h[5][5];
  for (int ri = 0; ri < 5; ++ri) {
    T d[5];
    load5(d, p + ri * rs, off, t);
    in_1d(h[ri], d);
  }
  for (int pc = 0; pc < 5; ++pc) {
    const T d[5] = {h[0][pc], h[1][pc], h[2][pc], h[3][pc], h[4][pc]};
    T u[5];
    in_1d(u, d);
    for (int pr = 0; pr < 5; ++pr) store(v + (5 * pr + pc) * vs + t, u[pr]);
  }
}

inline void transform_tiles42(float* v, int64_t vs, int64_t n, const float* p, int64_t rs,
                              const int64_t* off) {
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) transform_tile42<V4>(v, vs, p, rs, off, t);
  for (; t < n; ++t) transform_tile42<float>(v, vs, p, rs, off, t);
}

// Y = A^T M A + bias of tile t (or t .. t + 3) from m[e * ms + t]: o[i][j] is row i, column j.
template <class T>
inline void out_tile42(T o[4][4], const float* m, int64_t ms, int64_t t, float bias) {
  T h[5][4];
  for (int pr = 0; pr < 5; ++pr) {
    T mm[5];
    for (int pc = 0; pc < 5; ++pc) load(mm[pc], m + (5 * pr + pc) * ms + t);
    out_1d(h[pr], mm);
  }
  for (int j = 0; j < 4; ++j) {
    const T c[5] = {h[0][j], h[1][j], h[2][j], h[3][j], h[4][j]};
    T yy[4];
    out_1d(yy, c);
    for (int i = 0; i < 4; ++i) o[i][j] = yy[i] + bias;
  }
}

// Where a tile's 4x4 outputs go: y + out, rows ys apart, the rows and cols that lie inside.
struct TileOut {
  int64_t out;
  int rows, cols;
};

// The output transform of n tiles into y; false if any value stored is NaN or infinite.
bool out_tiles42(float* y, int64_t ys, const float* m, int64_t ms, int64_t n,
                 const TileOut* to, float bias) {
  V4 bad = {0.f, 0.f, 0.f, 0.f};  // x - x: 0 for a finite x, NaN otherwise
  float bad1 = 0.f;
  auto scalar = [&](const TileOut& d, int i, int j, float v) {
    y[d.out + i * ys + j] = v;
    bad1 += v - v;
  };
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) {
    V4 o[4][4];
    out_tile42<V4>(o, m, ms, t, bias);
    for (int i = 0; i < 4; ++i) transpose4(o[i][0], o[i][1], o[i][2], o[i][3]);  // o[i][l]: tile l
    for (int l = 0; l < 4; ++l) {
      const TileOut& d = to[t + l];
      if (d.rows == 4 && d.cols == 4) {
        for (int i = 0; i < 4; ++i) {
          store(y + d.out + i * ys, o[i][l]);
          bad += o[i][l] - o[i][l];
        }
      } else {
        for (int i = 0; i < d.rows; ++i)
          for (int j = 0; j < d.cols; ++j) scalar(d, i, j, o[i][l][j]);
      }
    }
  }
  for (; t < n; ++t) {
    float o[4][4];
    out_tile42<float>(o, m, ms, t, bias);
    for (int i = 0; i < to[t].rows; ++i)
      for (int j = 0; j < to[t].cols; ++j) scalar(to[t], i, j, o[i][j]);
  }
  return bad[0] == 0.f && bad[1] == 0.f && bad[2] == 0.f && bad[3] == 0.f && bad1 == 0.f;
}

// Items of the F(4, 2) forward: `gi` images by `tr` tile rows (gi > 1 only with
// whole images), their tiles side by side as the GEMMs' columns (capacity Tb). Sized so that the
// columns fill the GEMM's NR-wide panels (the fewest computed columns wasted: a tail of a few
// columns costs a whole panel), within about 640 KiB of V and M (floats_per_tile each tile) or
// one panel, whichever is more; a lone image of 64+ tiles in 2 bands so that both threads work.
struct Items {
  int64_t gi, tr, nband, count, Tb;
  Items(int64_t N, int64_t TY, int64_t TX, int64_t floats_per_tile, int NR) {
    const int64_t T = TY * TX;
    const int64_t cap = std::max<int64_t>(NR, (640 * 1024) / (4 * floats_per_tile));
    auto waste = [&](int64_t cols) {
      return static_cast<double>(round_up(cols, NR) - cols) / static_cast<double>(cols);
    };
    gi = 1, tr = 1;
    if (T >= NR || N == 1) {
      for (int64_t r = 1; r <= TY && (r == 1 || r * TX <= cap); ++r)
        if (waste(r * TX) <= waste(tr * TX)) tr = r;
      if (N == 1 && tr == TY && T >= 64) tr = (TY + 1) / 2;
    } else {
      tr = TY;
      for (int64_t g = 1; g <= N && (g == 1 || g * T <= cap); ++g)
        if (waste(g * T) < waste(gi * T)) gi = g;
    }
    nband = (TY + tr - 1) / tr;
    count = (N + gi - 1) / gi * nband;
    Tb = gi * tr * TX;
  }
};

// ---- the F(2, 2) directions ----------------------------------------------------------------
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

// An item's buffers within about 16 MiB: the forward's V and M at one panel of tiles (or one
// tile row), the F(2, 2) directions' at one tile row (36 (C + K) floats a tile bounds the input
// gradient's split rows, V and M of one phase and its output rows).
bool winograd4_s2_fits(const Conv2dShape& s) {
  const int64_t TX = (s.Q + 1) / 2, TXi = (s.W + 3) / 4, TX4 = (s.Q + 3) / 4;
  return 9 * (4 * s.C + s.K) * TX <= 4 * 1024 * 1024 &&
         36 * (s.C + s.K) * TXi <= 4 * 1024 * 1024 &&
         kE * (4 * s.C + s.K + 2) * std::max<int64_t>(32, TX4) <= 4 * 1024 * 1024;
}

bool winograd4_s2_forward(float* y, const float* x, const float* w, const float* b,
                          const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t TX = (s.Q + 3) / 4, TY = (s.P + 3) / 4, D = 4 * s.C;  // depth: (c, a, b)
  // U_e (K x D): element (k, (c, a, b)) from kernel phase (a, b) of w[k][c], written straight
  // into MR-row panels: at up + e * Kp * De + k / MR * MR * D + d * MR + k % MR (zero past K)
  const int MR = kt.mr;
  const int64_t Kp = round_up(s.K, MR);
  // The 25 blocks of U, V and M one row longer than they need: whole blocks apart, their rows
  // would fall on the same L1 sets (the transforms and the output go through all 25 at once).
  const int64_t De = D + 1;
  float* up = scratch(Buf::wino_weights, kE * Kp * De);
  parallel_for(Kp / MR, 64.0 * s.K * s.C, [&](int64_t p) {
    transform_panel<kE>(up + p * MR * D, Kp * De, 1, D, MR, [&](int64_t d, int i, int, float* q) {
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
  const Items it(s.N, TY, TX, kE * (D + s.K + 2), kt.nr);
  const int64_t Tb = it.Tb;
  // x rows as their 2 column phases (columns 2j + b - pw): tile tx of input phase (a, b) reads
  // phase b's 4tx + ci
  const int64_t Wq = 4 * TX + 4;
  thread_local std::vector<int64_t> voff;
  voff.resize(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) voff[d] = d * Tb;
  const int64_t* voffp = voff.data();
  int64_t base[kE], depth[kE];
  for (int e = 0; e < kE; ++e) base[e] = e * De, depth[e] = D;
  std::atomic<bool> finite{true};
  parallel_for(it.count, 2.0 * s.N * s.K * s.C * 16 * s.P * s.Q, [&](int64_t item) {
    const int64_t n0 = item / it.nband * it.gi, n1 = std::min(s.N, n0 + it.gi);
    const int64_t ty0 = item % it.nband * it.tr, ty1 = std::min(TY, ty0 + it.tr), nty = ty1 - ty0;
    const int64_t nt = (n1 - n0) * nty * TX;
    // per image, x rows 8 ty0 - ph + i: tile row ty, phase a reads local rows
    // 8 (ty - ty0) + a + 2ri
    const int64_t nrows = 8 * nty + 2, plane = nrows * 2 * Wq;
    float* sp = scratch(Buf::wino_rows, (n1 - n0) * plane);
    float* v = scratch(Buf::wino_v, kE * De * Tb);
    float* m = scratch(Buf::wino_m, kE * (s.K + 1) * Tb);
    thread_local std::vector<int64_t> in;  // tile t's first input, from sp (phase 0, 0)
    thread_local std::vector<TileOut> to;   // and where its outputs go, from channel 0's plane
    in.resize(static_cast<size_t>(nt));
    to.resize(static_cast<size_t>(nt));
    for (int64_t n = n0, t = 0; n < n1; ++n)
      for (int64_t ty = ty0; ty < ty1; ++ty)
        for (int64_t tx = 0; tx < TX; ++tx, ++t) {
          in[t] = (n - n0) * plane + 8 * (ty - ty0) * 2 * Wq + 4 * tx;
          to[t] = {(n * s.K * s.P + 4 * ty) * s.Q + 4 * tx,
                   static_cast<int>(std::min<int64_t>(4, s.P - 4 * ty)),
                   static_cast<int>(std::min<int64_t>(4, s.Q - 4 * tx))};
        }
    for (int64_t c = 0; c < s.C; ++c) {
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t nx = n + 1 < n1 ? n + 1 : n0, cx = n + 1 < n1 ? c : c + 1;
        if (cx < s.C)
          prefetch_rows(x + (nx * s.C + cx) * s.H * s.W, s.H, s.W, 8 * ty0 - s.ph, nrows);
        split_rows(sp + (n - n0) * plane, 2 * Wq, Wq, x + (n * s.C + c) * s.H * s.W, s.H, s.W,
                   8 * ty0 - s.ph, 1, nrows, s.pw, 2, Wq);
      }
      for (int a = 0; a < 2; ++a)
        for (int bb = 0; bb < 2; ++bb)  // rows a + 2ri: 4 Wq apart
          transform_tiles42(v + (c * 4 + a * 2 + bb) * Tb, De * Tb, nt, sp + a * 2 * Wq + bb * Wq,
                            4 * Wq, in.data());
    }
    winograd_gemms(m, up, v, base, depth, kE, s.K, Tb, nt, voffp, s.K + 1);
    bool ok = true;
    for (int64_t k = 0; k < s.K; ++k)
      ok &= out_tiles42(y + k * s.P * s.Q, s.Q, m + k * Tb, (s.K + 1) * Tb, nt, to.data(),
                        b ? b[k] : 0.f);
    if (!ok) finite = false;
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
    transform_panel<9>(up + p * MR * s.K, Cp * Ke, 4, s.K, MR, [&](int64_t k, int i, int f,
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
        for (int64_t k = 0; k < s.K; ++k)  // tile row ty reads dy rows 2ty + o_a - 1 + ri
          kt.wino22_in_rows(v + k * Tb, Ke * Tb, TX,
                            sp + k * plane_in + (2 * ty0 + ar.o[a] - 1 - lo) * 2 * Wq, 2 * Wq,
                            4 * Wq, col, TX, ty1 - ty0);
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
        // tmp: [(c - c0, phase)][e][tx]. Tile tx of input phase (a, b) reads x rows 4ty + a +
        // 2ri (4 Wq apart in sp) at columns 4tx + b - pw + 2ci (phases b, b + 2, b).
        for (int a = 0; a < 2; ++a)
          for (int bb = 0; bb < 2; ++bb) {
            const int64_t col[3] = {bb * Wq, (bb + 2) * Wq, bb * Wq + 1};
            kt.wino22_in_rows(tmp + (a * 2 + bb) * 9 * TX, TX, 4 * 9 * TX,
                              sp + (4 * ty + a) * 4 * Wq, 8 * Wq, nrows * 4 * Wq, col, TX, nc);
          }
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
        // tile row ty: dy rows 2ty, 2ty + 1 (4 TX apart in sp)
        kt.wino22_grad_rows(tmp + kk * 9 * TX, TX, MR * 9 * TX, sp, TX, 4 * TX, TX, TY);
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
