// Internals of conv2d shared by its files: the algorithm families (one file each), the helpers
// they share, and the plan tables (plan.cpp) that choose among them.
//
// Every function here is single-call: it writes all of its output, splits its own work over
// threads with parallel_for, and gives the same bits for any thread count.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "convkit/convkit.h"
#include "gemm.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {
namespace conv {

// parallel_for's work estimate (in flops) per float moved by a copy: a copy is memory-bound, and
// one float moved costs about as much time as 16 flops of a multiply kernel.
constexpr double kCopyCost = 16.0;

// Input channels and output channels of one group.
inline int64_t group_in(const Conv2dShape& s) { return s.C / s.G; }
inline int64_t group_out(const Conv2dShape& s) { return s.K / s.G; }
// One group of s as a convolution of its own (C and K per group; the other sizes unchanged).
inline Conv2dShape group_shape(const Conv2dShape& s) {
  Conv2dShape g = s;
  g.C = s.C / s.G;
  g.K = s.K / s.G;
  g.G = 1;
  return g;
}
// No groups and no dilation: the shapes the specialised paths were written for.
inline bool plain(const Conv2dShape& s) { return s.G == 1 && s.dh == 1 && s.dw == 1; }

// The operands of KernelTable::conv_dx_lanes for shape s (buf left null).
inline DxLanesArgs lanes_args(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  return DxLanesArgs{w, dy, s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.P, s.Q, s.ph, s.pw, dx, nullptr};
}

// For tap (r, t) and output positions j in [j0, j1): calls f(j, q0, q1, h, lo, hi) for each run
// of one output row p = j / Q, covering q in [q0, q1); h is the input row (may be outside
// [0, H)), and q in [lo, hi) are the columns whose input column q*sw + t*dw - pw lies inside
// [0, W).
template <class F>
inline void for_each_run(const Conv2dShape& s, int64_t r, int64_t t, int64_t j0, int64_t j1,
                         F&& f) {
  const int64_t a = s.pw - t * s.dw, b = s.W - 1 + s.pw - t * s.dw;
  const int64_t lo_all = a <= 0 ? 0 : (a + s.sw - 1) / s.sw;
  const int64_t hi_all = b < 0 ? 0 : b / s.sw + 1;
  int64_t p = j0 / s.Q, q0 = j0 - p * s.Q;  // one division; later runs start at q = 0
  for (int64_t j = j0; j < j1; ++p, q0 = 0) {
    const int64_t q1 = std::min(s.Q, q0 + (j1 - j));
    const int64_t lo = std::min(std::max(lo_all, q0), q1);
    const int64_t hi = std::min(std::max(hi_all, lo), q1);
    f(j, q0, q1, p * s.sh - s.ph + r * s.dh, lo, hi);
    j += q1 - q0;
  }
}

// Prefetches rows [r0, r0 + n) (clipped to [0, H)) of a plane W floats wide: the next plane's
// rows while this one is transformed (x's planes are a 4 KiB page each on 32x32 images, and the
// hardware prefetchers start cold on every page: the split waited on memory for 11 % of the
// forward; the stride-2 3x3 one likewise).
inline void prefetch_rows(const float* plane, int64_t H, int64_t W, int64_t r0, int64_t n) {
  const int64_t a = std::max<int64_t>(0, r0), b = std::min(H, r0 + n);
  const char* p = reinterpret_cast<const char*>(plane + a * W);
  for (int64_t i = 0; i < (b - a) * W * 4; i += 64) __builtin_prefetch(p + i);
}

// out[i] = the 16 lanes lanes[16 i .. 16 i + 15] added in float64, in lane order.
inline void sum_lanes(float* out, const float* lanes, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (int l = 0; l < 16; ++l) sum += lanes[i * 16 + l];
    out[i] = static_cast<float>(sum);
  }
}

// ---- shared helpers (im2col.cpp) -----------------------------------------------------------
// col rows (c, r, t) of one image's (C, H, W) channels for positions [j0, j1); row k at col + k*ld.
void im2col(float* col, int64_t ld, const float* x, const Conv2dShape& s, int64_t j0, int64_t j1);
// The NR-column panels (full CRS depth) of col for positions [j0, j1) of image x.
void im2col_panels(float* dst, const float* x, const Conv2dShape& s, int64_t j0, int64_t j1,
                   int NR);
// dx (nch, H, W) += gcol rows (c, r, t) of positions [j0, j1); row k starts at gcol + k * ld.
void col2im(float* dx, const float* gcol, int64_t ld, const Conv2dShape& s, int64_t nch,
            int64_t j0, int64_t j1);
// Columns per block so that `bytes_per_col` times the width stays near `budget` bytes.
int64_t block_cols(int64_t bytes_per_col, int64_t budget, int64_t total, int NR);
// out[e] = parts[0][e] + parts[1][e] + ... in that order (parts are `total` apart)
void reduce_in_order(float* out, const float* parts, int64_t nparts, int64_t total);
// Rows h0, h0 + hstep, ... (n of them) of an (H, W) plane split into their sw column phases.
void split_rows(float* dst, int64_t dstep, int64_t fstride, const float* plane, int64_t H,
                int64_t W, int64_t h0, int64_t hstep, int64_t n, int64_t pw, int64_t sw,
                int64_t Wq);
// Rows h0 .. h0 + nr - 1 of an (H, W) plane, each as pw zeros, the W values, zeros up to Wd.
void pad_rows(float* dst, int64_t Wd, const float* plane, int64_t H, int64_t W, int64_t h0,
              int64_t nr, int64_t pw);
// x zero-padded to (N, C, H + 2ph, W + 2pw) in the calling thread's Buf::padded_input, then
// `slack` zeros (x itself when there is no padding).
const float* padded_input(const float* x, const Conv2dShape& s, int64_t slack = 0);
// NR-column panels of col^T for the weight gradient (positions [j0, j0 + kc), taps [c0, c0 + n)),
// panels `pstride` positions apart (0: kc).
void pack_colT(float* dst, const float* xpad, const Conv2dShape& s, int64_t j0, int64_t kc,
               int64_t c0, int64_t n, int NR, int64_t pstride = 0);
// Whether every one of n values is finite.
bool all_finite(const float* v, int64_t n);
// pack_a of A's rows [0, m) to depth kc (round_up(m, MR) * kc floats), its panels spread over
// the threads (a layer's weights, packed on every call).
void pack_weights(float* dst, MatView A, int64_t m, int64_t kc, int MR);

// ---- forward families ----------------------------------------------------------------------
// Each returns false when it declines at run time (the next applicable row then runs).
// direct.cpp: implicit im2col read in place; channels in the lanes for narrow outputs.
bool direct_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s);
bool kvec_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s);
// kvec_forward of a stride-1 input gradient as a convolution (dx_transposed_conv): w are the
// weights of the convolution it is the gradient of, (s.C, s.K, R, S), which kvec lays out
// flipped and transposed as it goes (one pass over them instead of two). No bias.
bool kvec_forward_flipped(float* y, const float* x, const float* w, const Conv2dShape& s);
// winograd.cpp
bool winograd_forward(float* y, const float* x, const float* w, const float* b,
                      const Conv2dShape& s);
bool winograd_s2_forward(float* y, const float* x, const float* w, const float* b,
                         const Conv2dShape& s);
int64_t winograd_s2_band(const Conv2dShape& s, const KernelTable& kt, double* waste);
bool winograd_s2_columns_pay(const Conv2dShape& s, const KernelTable& kt);
bool winograd_lanes_forward(float* y, const float* x, const float* w, const float* b,
                            const Conv2dShape& s);
bool winograd_lanes_forward_bn(float* y, const float* x, const float* w, const float* b,
                               const Conv2dShape& s, const BnTerms* bn);
bool winograd_lanes_pays(const Conv2dShape& s, const KernelTable& kt);
bool winograd3_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool winograd3_dw_from_du(float* dw, const float* parts, int64_t nparts, const Conv2dShape& s);
bool winograd_lanes_weight_grad(float* dw, const float* dy, const float* x,
                                const Conv2dShape& s);
void winograd_dw_gemms(float* part, const float* ap, float* bp, int ne, int64_t K, int64_t D,
                       int64_t Tg, int64_t depth, bool accumulate);
// The reduction both Winograd weight gradients run: dU_e (K x D, e < ne) = the sum over every
// image's T tiles of A_e B_e^T. Images go in fixed chunks of chunk_images or more (2+ chunks, by
// shape only), their partial sums added in chunk order; a chunk goes in groups of images whose
// tiles fill one GEMM depth block of 256, so that dU is read and written once per group.
// pack(n, t0, Tg, ap, bp) packs image n's tiles as GEMM columns t0 .. t0 + T - 1 of A_e
// (MR-row panels, round_up(K, MR) x Tg floats per e, at ap) and of B_e (NR-column panels,
// round_up(D, NR) x Tg per e, at bp). Returns dU (e-major, ne K D floats), a dw_partials buffer;
// with `parts`, the chunks' partial sums unadded instead (*parts of them, ne K D floats apart).
template <class Pack>
const float* winograd_dw_sum(const Conv2dShape& s, int ne, int64_t D, int64_t T,
                             int64_t chunk_images, double work, Pack&& pack,
                             int64_t* parts = nullptr) {
  const int64_t UD = ne * s.K * D;
  const int64_t Kp = round_up(s.K, g_kernels->mr), Dp = round_up(D, g_kernels->nr);
  const int64_t nchunk = std::min<int64_t>(s.N, std::max<int64_t>(2, s.N / chunk_images));
  const int64_t per = (s.N + nchunk - 1) / nchunk, nch = (s.N + per - 1) / per;
  // the chunks' dU, then their sum (unless the caller adds them up itself)
  float* du = scratch(Buf::dw_partials, (nch + (parts ? 0 : 1)) * UD);
  const int64_t gi = std::max<int64_t>(1, std::min(per, 256 / T)), Tg = gi * T;
  parallel_for(nch, work, [&](int64_t ci) {
    float* bp = scratch(Buf::wino_v, ne * Dp * Tg);
    float* ap = scratch(Buf::wino_m, ne * Kp * Tg);
    const int64_t n0 = ci * per, n1 = std::min(s.N, n0 + per);
    for (int64_t g0 = n0; g0 < n1; g0 += gi) {
      const int64_t g1 = std::min(n1, g0 + gi);
      for (int64_t n = g0; n < g1; ++n) pack(n, (n - g0) * T, Tg, ap, bp);
      winograd_dw_gemms(du + ci * UD, ap, bp, ne, s.K, D, Tg, (g1 - g0) * T, g0 > n0);
    }
  });
  if (parts) *parts = nch;
  if (nch == 1 || parts) return du;
  reduce_in_order(du + nch * UD, du, nch, UD);
  return du + nch * UD;
}
// The Winograd-style paths' shared steps: the ne GEMMs M_e (K x nt, rows Tb apart, at
// m + e * mrows * Tb; mrows 0: K) = U_e V_e, U_e packed at up + round_up(K, MR) * base[e]
// (depth[e] deep), V_e's rows at v + base[e] * Tb + voff[i]; and the output transform of tile
// rows [ty0, ty1) of image n into y by out_row (M_e's rows mrows * Tb apart; 0: s.K).
void winograd_gemms(float* m, const float* up, const float* v, const int64_t* base,
                    const int64_t* depth, int ne, int64_t K, int64_t Tb, int64_t nt,
                    const int64_t* voff, int64_t mrows = 0);
bool winograd_out_rows(bool (*out_row)(float*, float*, const float*, int64_t, int64_t, int64_t,
                                       float),
                       float* y, const float* m, const float* b, const Conv2dShape& s, int64_t n,
                       int64_t ty0, int64_t ty1, int64_t TX, int64_t Tb, int64_t mrows = 0);
// winograd4_s2.cpp: 4x4 kernels at stride 2, split by phase into F(2, 2)-style 2-tap sums
bool winograd4_s2_forward(float* y, const float* x, const float* w, const float* b,
                          const Conv2dShape& s);
bool winograd4_s2_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool winograd4_s2_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool winograd4_s2_fits(const Conv2dShape& s);
// im2col_gemm.cpp: im2col into packed panels + GEMM, per group; any groups, dilation, stride.
bool im2col_gemm_forward(float* y, const float* x, const float* w, const float* b,
                         const Conv2dShape& s);
// 1x1 stride-1 layers over few positions: the positions as the GEMM's rows
void gemm1x1(float* y, const float* x, MatView wt, const float* b, const Conv2dShape& s);
bool gemm1x1_forward(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s);
// strided 1x1 layers without padding: one GEMM over the whole batch's positions
bool gemm_batch_forward(float* y, const float* x, const float* w, const float* b,
                        const Conv2dShape& s);
// phases.cpp: a dilated forward as dh*dw undilated ones (each run through the table)
bool dilated_phases(float* y, const float* x, const float* w, const float* b,
                    const Conv2dShape& s);
bool dilated_phases_pays(const Conv2dShape& s);
// the plan of the phases of a dilated stride-1 layer run as one undilated batch
std::string dilated_sub_plan(const Conv2dShape& s);
// depthwise.cpp: few channels per group, over zero-padded phase-split rows, each output row
// summed in registers by KernelTable::conv_rows (finite operands only).
bool depthwise_forward(float* y, const float* x, const float* w, const float* b,
                       const Conv2dShape& s);
// rows.cpp: per output row, each tap's in-range columns only (padding is never multiplied, so
// NaN/Inf weights reach exactly the outputs that use them); any shape.
bool rows_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s);

// ---- input-gradient families (input_grad.cpp, depthwise.cpp, rows.cpp) ---------------------
bool dx_transposed_conv(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool dx_rows(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool dx_lanes(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool dx_gemm_col2im(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool depthwise_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool rows_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s);

// ---- weight-gradient families (weight_grad.cpp, phases.cpp, im2col_gemm.cpp, depthwise.cpp,
// rows.cpp) ---------------------------------------------------------------------------------
bool dw_dot(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool dw_kvec(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool dw_gemm(float* dw, const float* dy, const float* x, const Conv2dShape& s);
// a dilated stride-1 weight gradient as the sum of its phases' undilated ones
bool dw_dilated_phases(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool dw_dilated_phases_pays(const Conv2dShape& s);
bool dw_im2col_gemm(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool depthwise_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s);
bool rows_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s);

// The forward convolution through the table without any forced choice (the paths that run a
// forward convolution call this), for weights whose values the caller's row already found
// finite (both callers multiply stand-in zeros: they run only then).
void forward_planned(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s);

}  // namespace conv
}  // namespace convkit
