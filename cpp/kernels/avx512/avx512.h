// The AVX-512 kernels, one file per family (every file here is compiled with -mavx512f/dq/bw/vl);
// kernels_avx512.cpp fills the kernel table with them. Contracts: cpp/kernels.h.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace convkit {
namespace avx512 {

constexpr int MR = 8, NR = 32;  // the GEMM register tile

// gemm_avx512.cpp
void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                  int nr, bool accumulate, const float* bias);
void direct_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff, float* c,
                    int64_t ldc, int mr, int nr, bool accumulate, const float* bias);
void direct_wide_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                         float* c, int64_t ldc, int mr, int nr, const float* bias, int64_t j0,
                         int64_t Wq, int64_t Q);
void colT_rows16_avx512(float* dst, int NR, const float* const* base, int nr, int64_t o,
                        int64_t sw, int cnt);
// pool_avx512.cpp
void maxpool2x2_bwd(float* dx, const float* dy, const float* x, int64_t H, int64_t W, int64_t P,
                    int64_t Q);
void maxpool_plane_avx512(float* y, const float* x, const Pool2dShape& s);
void planes_to_lanes_avx512(float* xt, const float* x, int64_t stride, int n, int64_t len);
// conv_tiles_avx512.cpp
extern const int kDwTileShapes[7][2];  // the tiles conv_dw_tile_avx512 keeps in registers
void conv_dw_tile_avx512(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg);
void conv_kvec_avx512(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                      int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                      const float* bias, int nq, int nk, bool two_rows);
void conv_kvec_blocks_avx512(float* out, int64_t ldo, const float* x, int64_t xstep,
                             const int64_t* off, int64_t crs, const float* w, int64_t wstride,
                             const float* bias, int nq, int nk, int nb, float* part, int mode,
                             const KvecTaps* taps);
void rows_to_lanes16_avx512(float* dst, const float* src, int64_t ld, int rows, int64_t n);
void conv_dx_rows_avx512(float* dx, const float* dy, const float* wt, int64_t h0, int nh,
                         const DxRowsArgs& a);
void conv_dw_kvec_avx512(float* out, int64_t ldo, const float* dyT, const float* x,
                         int64_t x_ns, int64_t x_rs, int64_t x_cs, const int64_t* off, int S,
                         int nt, int nk, int64_t N, int64_t P, int64_t Q);
void col2im_plane_avx512(float* dx, const float* g, int64_t ld, const Col2imArgs& a);
// winograd_avx512.cpp, winograd5_avx512.cpp
void wino_in_row_avx512(float* v, int64_t vs, const float* const* r, int64_t nt);
bool wino_out_row_avx512(float* y0, float* y1, const float* mm, int64_t ms, int64_t nt,
                         int64_t Q, float bias);
void wino_s2_in_row_avx512(float* const* v, const float* const* r, int64_t nt, int64_t pw,
                           int64_t W);
bool wino_s2_out_row_avx512(float* y0, float* y1, const float* mm, int64_t ms, int64_t nt,
                            int64_t Q, float bias);
void wino22_in_rows_avx512(float* v, int64_t vs, int64_t vrow, const float* r, int64_t rs,
                           int64_t rrow, const int64_t* col, int64_t n, int64_t nrows);
void wino22_grad_rows_avx512(float* y, int64_t ys, int64_t yrow, const float* r, int64_t rs,
                             int64_t rrow, int64_t n, int64_t nrows);
bool wino_lanes_item_avx512(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1);
void conv_dw3s2_plane_avx512(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                             const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                             int64_t pw, const float* w, const float* bias);
void conv_dw5s2_plane_avx512(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                             const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                             int64_t pw, const float* w, const float* bias);
void conv_dw3s2_dots_avx512(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                            int64_t H, int64_t W, int64_t ph, int64_t pw);
void conv_dw3s2_dx_avx512(float* dx, int64_t dxstride, int64_t n, int64_t H, int64_t W,
                          const float* dy, int64_t dystride, int64_t P, int64_t Q, int64_t ph,
                          int64_t pw, const float* w);
void wino_lanes_dw_item_avx512(const WinoLanesDwArgs& a, int64_t n0, int64_t ty0, int64_t ty1);
// conv_lanes_avx512.cpp
void conv_dx_lanes_avx512(const DxLanesArgs& a, int64_t n0);
// conv_rows_avx512.cpp
void conv_rows_avx512(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                      int64_t bstep, const int64_t* off, const float* w, int64_t ntaps,
                      float bias);
void conv_rows_k_avx512(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, int64_t Q,
                        const float* base, int64_t bstep, const int64_t* off, const float* w,
                        int64_t ntaps, const float* bias);
void conv_dw_plane_avx512(int ks, float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                          const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                          int64_t pw, const float* w, const float* bias, const float* zeros);
void conv_dw3_dots_avx512(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                          int64_t H, int64_t W, int64_t ph, int64_t pw, const float* zeros);
void conv_row_dots_avx512(float* lanes, const float* dy, int64_t dystep, int64_t nrows,
                          int64_t Q, const float* base, int64_t bstep, const int64_t* off,
                          int64_t ntaps);
// rows_avx512.cpp
void phase_split_rows_avx512(float* dst, int64_t dstep, int64_t fstride, const float* src,
                             int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t sw,
                             int64_t Wq);
void phase_merge_row_avx512(float* dst, const float* src, int64_t fstride, int64_t sw,
                            int64_t first, int64_t n);

// The portable loops (kernels_avx512.cpp compiles them with these flags) for the cases the
// kernels above hand back.
void portable_maxpool_plane(float* y, const float* x, const Pool2dShape& s);
void portable_conv_dw_tile(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg);
void portable_col2im_plane(float* dx, const float* g, int64_t ld, const Col2imArgs& a);
void portable_phase_split_rows(float* dst, int64_t dstep, int64_t fstride, const float* src,
                               int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t sw,
                               int64_t Wq);
void portable_phase_merge_row(float* dst, const float* src, int64_t fstride, int64_t sw,
                              int64_t first, int64_t n);

}  // namespace avx512
}  // namespace convkit
