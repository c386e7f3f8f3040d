// The AVX-512 kernel table: the portable loops compiled with AVX-512 flags, overridden by the
// hand-written kernels of this folder (one file per family, declared in avx512.h).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "kernels/avx512/avx512.h"
#include "kernels/avx512/transpose_avx512.h"

namespace convkit {
namespace avx512 {
#include "../portable.inc"

void portable_maxpool_plane(float* y, const float* x, const Pool2dShape& s) {
  maxpool_plane(y, x, s);
}
void portable_conv_dw_tile(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg) {
  conv_dw_tile(out, ldo, a, kt, tg);
}
void portable_col2im_plane(float* dx, const float* g, int64_t ld, const Col2imArgs& a) {
  col2im_plane(dx, g, ld, a);
}
void portable_phase_split_rows(float* dst, int64_t dstep, int64_t fstride, const float* src,
                               int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t sw,
                               int64_t Wq) {
  phase_split_rows(dst, dstep, fstride, src, sstep, nrows, W, pw, sw, Wq);
}

void portable_phase_merge_row(float* dst, const float* src, int64_t fstride, int64_t sw,
                              int64_t first, int64_t n) {
  phase_merge_row(dst, src, fstride, sw, first, n);
}

}  // namespace avx512

void fill_table_avx512(KernelTable& t) {
  t.name = "avx512";
  t.lanes = 16;
  t.mr = avx512::MR;
  t.nr = avx512::NR;
  t.gemm = avx512::gemm_ukernel;
  t.gemm_direct = avx512::direct_ukernel;
  t.sgd = sgd_avx512;
  avx512::fill_portable(t);
  t.maxpool2x2_bwd_plane = avx512::maxpool2x2_bwd;
  t.maxpool_plane = avx512::maxpool_plane_avx512;
  t.planes_to_lanes = avx512::planes_to_lanes_avx512;
  t.conv_dw_tile = avx512::conv_dw_tile_avx512;
  t.dw_tile_shapes = avx512::kDwTileShapes;
  t.dw_tile_nshapes = static_cast<int>(std::size(avx512::kDwTileShapes));
  t.conv_kvec = avx512::conv_kvec_avx512;
  t.conv_kvec_blocks = avx512::conv_kvec_blocks_avx512;
  t.rows_to_lanes16 = avx512::rows_to_lanes16_avx512;
  t.conv_dx_rows = avx512::conv_dx_rows_avx512;
  t.conv_dw_kvec = avx512::conv_dw_kvec_avx512;
  t.col2im_plane = avx512::col2im_plane_avx512;
  t.phase_split_rows = avx512::phase_split_rows_avx512;
  t.phase_merge_row = avx512::phase_merge_row_avx512;
  t.wino_in_row = avx512::wino_in_row_avx512;
  t.wino_out_row = avx512::wino_out_row_avx512;
  t.wino_plain = false;
  t.wino_s2_in_row = avx512::wino_s2_in_row_avx512;
  t.wino_s2_out_row = avx512::wino_s2_out_row_avx512;
  t.wino22_in_rows = avx512::wino22_in_rows_avx512;
  t.wino22_grad_rows = avx512::wino22_grad_rows_avx512;
  t.transpose = avx512::transpose_avx512;
  t.colT_rows16 = avx512::colT_rows16_avx512;
  t.wino_lanes_item = avx512::wino_lanes_item_avx512;
  t.wino_lanes_dw_item = avx512::wino_lanes_dw_item_avx512;
  t.gemm_direct_wide = avx512::direct_wide_ukernel;
  t.conv_dx_lanes = avx512::conv_dx_lanes_avx512;
  t.conv_rows = avx512::conv_rows_avx512;
  t.conv_rows_k = avx512::conv_rows_k_avx512;
  t.conv_row_dots = avx512::conv_row_dots_avx512;
  t.conv_dw_plane = avx512::conv_dw_plane_avx512;
  t.conv_dw3_dots = avx512::conv_dw3_dots_avx512;
  t.conv_dw3s2_plane = avx512::conv_dw3s2_plane_avx512;
  t.conv_dw5s2_plane = avx512::conv_dw5s2_plane_avx512;
  t.conv_dw3s2_dots = avx512::conv_dw3s2_dots_avx512;
  t.conv_dw3s2_dx = avx512::conv_dw3s2_dx_avx512;
}

}  // namespace convkit
