// A developers' harness, never part of a release build: the AVX-512 kernels compiled for a CPU
// without AVX-512, each AVX-512 intrinsic carried out by SIMDe's portable version (Debian's
// libsimde-dev) on AVX2, so that a machine without AVX-512 can run the AVX-512 kernel set and
// compare its bits with the AVX2 set's (tools/emulated_avx512.sh builds and tests it).
// Force-included (-include) ahead of each AVX-512 source compiled with CONVKIT_EMULATE_AVX512:
// the native headers first, then SIMDe, then every intrinsic name and vector type the kernels
// use mapped to SIMDe's (the kernels' own #include <immintrin.h> then adds nothing), and the
// __AVX512F__ branches of portable.inc taken as in the real build.
// Exact where the instruction is: IEEE adds, multiplies, fused multiply-adds, compares,
// conversions and moves give the hardware's bits. Not rcp14 (an approximation whose bits only
// the hardware has: here 1 / x), so ops built on it are not bit-checked this way.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include <simde/x86/avx512.h>

namespace ck_emu {
// what SIMDe 0.7.4 lacks, element by element through memory
struct F16 { float v[16]; };
struct F8 { float v[8]; };
struct I16 { int32_t v[16]; };
inline F16 f16(simde__m512 a) { F16 r; simde_mm512_storeu_ps(r.v, a); return r; }
inline simde__m512 m512(const F16& r) { return simde_mm512_loadu_ps(r.v); }
inline I16 i16(simde__m512i a) { I16 r; simde_mm512_storeu_si512(r.v, a); return r; }
inline simde__m512i m512i(const I16& r) { return simde_mm512_loadu_si512(r.v); }
inline F8 f8(simde__m256 a) { F8 r; simde_mm256_storeu_ps(r.v, a); return r; }

inline simde__m512 maskz_loadu_ps(simde__mmask16 k, const void* p) {
  F16 r{};
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(&r.v[i], static_cast<const float*>(p) + i, 4);
  return m512(r);
}
inline void mask_storeu_ps(void* p, simde__mmask16 k, simde__m512 a) {
  const F16 r = f16(a);
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) std::memcpy(static_cast<float*>(p) + i, &r.v[i], 4);
}
inline simde__m256 maskz_loadu_ps256(simde__mmask8 k, const void* p) {
  F8 r{};
  for (int i = 0; i < 8; ++i)
    if (k >> i & 1) std::memcpy(&r.v[i], static_cast<const float*>(p) + i, 4);
  return simde_mm256_loadu_ps(r.v);
}
inline void mask_storeu_ps256(void* p, simde__mmask8 k, simde__m256 a) {
  const F8 r = f8(a);
  for (int i = 0; i < 8; ++i)
    if (k >> i & 1) std::memcpy(static_cast<float*>(p) + i, &r.v[i], 4);
}
inline simde__m128 maskz_loadu_ps128(simde__mmask8 k, const void* p) {
  float r[4] = {};
  for (int i = 0; i < 4; ++i)
    if (k >> i & 1) std::memcpy(&r[i], static_cast<const float*>(p) + i, 4);
  return simde_mm_loadu_ps(r);
}
inline void mask_storeu_ps128(void* p, simde__mmask8 k, simde__m128 a) {
  float r[4];
  simde_mm_storeu_ps(r, a);
  for (int i = 0; i < 4; ++i)
    if (k >> i & 1) std::memcpy(static_cast<float*>(p) + i, &r[i], 4);
}
inline simde__m512i alignr_epi32(simde__m512i a, simde__m512i b, int imm) {
  const I16 x = i16(a), y = i16(b);
  I16 r;
  imm &= 15;
  for (int i = 0; i < 16; ++i) r.v[i] = i + imm < 16 ? y.v[i + imm] : x.v[i + imm - 16];
  return m512i(r);
}
inline simde__mmask16 cmplt_epi32_mask(simde__m512i a, simde__m512i b) {
  const I16 x = i16(a), y = i16(b);
  simde__mmask16 k = 0;
  for (int i = 0; i < 16; ++i) k |= static_cast<simde__mmask16>((x.v[i] < y.v[i]) << i);
  return k;
}
inline simde__mmask16 testn_epi32_mask(simde__m512i a, simde__m512i b) {
  const I16 x = i16(a), y = i16(b);
  simde__mmask16 k = 0;
  for (int i = 0; i < 16; ++i) k |= static_cast<simde__mmask16>(((x.v[i] & y.v[i]) == 0) << i);
  return k;
}
inline simde__m512i srai_epi32(simde__m512i a, int imm) {
  I16 x = i16(a);
  for (int i = 0; i < 16; ++i) x.v[i] = imm > 31 ? (x.v[i] < 0 ? -1 : 0) : x.v[i] >> imm;
  return m512i(x);
}
inline simde__m256 cvtpd_ps(simde__m512d a) {
  double d[8];
  simde_mm512_storeu_pd(d, a);
  float r[8];
  for (int i = 0; i < 8; ++i) r[i] = static_cast<float>(d[i]);  // round to nearest, as MXCSR
  return simde_mm256_loadu_ps(r);
}
inline simde__m512d cvtps_pd(simde__m256 a) {
  const F8 f = f8(a);
  double d[8];
  for (int i = 0; i < 8; ++i) d[i] = f.v[i];
  return simde_mm512_loadu_pd(d);
}
inline simde__m256 extractf32x8_ps(simde__m512 a, int imm) {
  const F16 r = f16(a);
  return simde_mm256_loadu_ps(r.v + 8 * (imm & 1));
}
inline simde__m512 mask3_fmadd_ps(simde__m512 a, simde__m512 b, simde__m512 c, simde__mmask16 k) {
  const F16 x = f16(a), y = f16(b);
  F16 z = f16(c);
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1) z.v[i] = std::fma(x.v[i], y.v[i], z.v[i]);
  return m512(z);
}
inline simde__mmask16 mask_cmp_ps_mask(simde__mmask16 k, simde__m512 a, simde__m512 b, int imm) {
  return static_cast<simde__mmask16>(k & simde_mm512_cmp_ps_mask(a, b, imm));
}
inline simde__m512 mask_i32gather_ps(simde__m512 src, simde__mmask16 k, simde__m512i idx,
                                     const void* base, int scale) {
  F16 r = f16(src);
  const I16 ix = i16(idx);
  for (int i = 0; i < 16; ++i)
    if (k >> i & 1)
      std::memcpy(&r.v[i], static_cast<const char*>(base) + int64_t(ix.v[i]) * scale, 4);
  return m512(r);
}
inline simde__m512 rcp14_ps(simde__m512 a) {  // not the hardware's bits (see above)
  F16 r = f16(a);
  for (int i = 0; i < 16; ++i) r.v[i] = 1.f / r.v[i];
  return m512(r);
}
// GCC's _mm512_reduce_add_ps: halves, then quarters, then pairs
inline float reduce_add_ps(simde__m512 a) {
  const F16 x = f16(a);
  float t3[8], t6[4];
  for (int i = 0; i < 8; ++i) t3[i] = x.v[8 + i] + x.v[i];
  for (int i = 0; i < 4; ++i) t6[i] = t3[4 + i] + t3[i];
  const float t80 = t6[0] + t6[2], t81 = t6[1] + t6[3];
  return t80 + t81;
}
}  // namespace ck_emu

#define CONVKIT_EMULATED_AVX512 1
#define __AVX512F__ 1
#define __AVX512DQ__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __m128 simde__m128
#define __m256 simde__m256
#define __m256d simde__m256d
#define __m256i simde__m256i
#define __m512 simde__m512
#define __m512d simde__m512d
#define __m512i simde__m512i
#define __mmask8 simde__mmask8
#define __mmask16 simde__mmask16
#define _mm256_mask_storeu_ps ck_emu::mask_storeu_ps256
#define _mm256_maskz_loadu_ps ck_emu::maskz_loadu_ps256
#define _mm512_alignr_epi32 ck_emu::alignr_epi32
#define _mm512_cmplt_epi32_mask ck_emu::cmplt_epi32_mask
#define _mm512_cvtpd_ps ck_emu::cvtpd_ps
#define _mm512_cvtps_pd ck_emu::cvtps_pd
#define _mm512_extractf32x8_ps ck_emu::extractf32x8_ps
#define _mm512_mask3_fmadd_ps ck_emu::mask3_fmadd_ps
#define _mm512_mask_cmp_ps_mask ck_emu::mask_cmp_ps_mask
#define _mm512_mask_i32gather_ps ck_emu::mask_i32gather_ps
#define _mm512_mask_storeu_ps ck_emu::mask_storeu_ps
#define _mm512_maskz_loadu_ps ck_emu::maskz_loadu_ps
#define _mm512_rcp14_ps ck_emu::rcp14_ps
#define _mm512_srai_epi32 ck_emu::srai_epi32
#define _mm512_testn_epi32_mask ck_emu::testn_epi32_mask
#define _mm_mask_storeu_ps ck_emu::mask_storeu_ps128
#define _mm_maskz_loadu_ps ck_emu::maskz_loadu_ps128
#define _mm512_reduce_add_ps ck_emu::reduce_add_ps
#define _mm256_castps128_ps256 simde_mm256_castps128_ps256
#define _mm256_castps256_ps128 simde_mm256_castps256_ps128
#define _mm256_cmp_ps_mask simde_mm256_cmp_ps_mask
#define _mm256_cvtpd_ps simde_mm256_cvtpd_ps
#define _mm256_cvtps_pd simde_mm256_cvtps_pd
#define _mm256_extractf128_ps simde_mm256_extractf128_ps
#define _mm256_insertf128_ps simde_mm256_insertf128_ps
#define _mm256_maskz_compress_epi32 simde_mm256_maskz_compress_epi32
#define _mm256_maskz_compress_ps simde_mm256_maskz_compress_ps
#define _mm256_max_ps simde_mm256_max_ps
#define _mm256_permute2f128_ps simde_mm256_permute2f128_ps
#define _mm256_set1_ps simde_mm256_set1_ps
#define _mm256_setzero_ps simde_mm256_setzero_ps
#define _mm256_shuffle_ps simde_mm256_shuffle_ps
#define _mm256_storeu_ps simde_mm256_storeu_ps
#define _mm256_storeu_si256 simde_mm256_storeu_si256
#define _mm256_testz_si256 simde_mm256_testz_si256
#define _mm256_unpackhi_ps simde_mm256_unpackhi_ps
#define _mm256_unpacklo_ps simde_mm256_unpacklo_ps
#define _mm512_add_epi32 simde_mm512_add_epi32
#define _mm512_add_ps simde_mm512_add_ps
#define _mm512_castps128_ps512 simde_mm512_castps128_ps512
#define _mm512_castps256_ps512 simde_mm512_castps256_ps512
#define _mm512_castps512_ps128 simde_mm512_castps512_ps128
#define _mm512_castps512_ps256 simde_mm512_castps512_ps256
#define _mm512_castps_si512 simde_mm512_castps_si512
#define _mm512_castsi512_ps simde_mm512_castsi512_ps
#define _mm512_cmp_ps_mask simde_mm512_cmp_ps_mask
#define _mm512_cmpge_epi32_mask simde_mm512_cmpge_epi32_mask
#define _mm512_extractf32x4_ps simde_mm512_extractf32x4_ps
#define _mm512_fmadd_ps simde_mm512_fmadd_ps
#define _mm512_insertf32x4 simde_mm512_insertf32x4
#define _mm512_insertf32x8 simde_mm512_insertf32x8
#define _mm512_load_si512 simde_mm512_load_si512
#define _mm512_loadu_ps simde_mm512_loadu_ps
#define _mm512_mask_add_ps simde_mm512_mask_add_ps
#define _mm512_mask_blend_ps simde_mm512_mask_blend_ps
#define _mm512_maskz_compress_ps simde_mm512_maskz_compress_ps
#define _mm512_maskz_mov_ps simde_mm512_maskz_mov_ps
#define _mm512_max_ps simde_mm512_max_ps
#define _mm512_min_ps simde_mm512_min_ps
#define _mm512_mullo_epi32 simde_mm512_mullo_epi32
#define _mm512_permutex2var_ps simde_mm512_permutex2var_ps
#define _mm512_permutexvar_ps simde_mm512_permutexvar_ps
#define _mm512_scalef_ps simde_mm512_scalef_ps
#define _mm512_set1_epi32 simde_mm512_set1_epi32
#define _mm512_set1_ps simde_mm512_set1_ps
#define _mm512_setr_epi32 simde_mm512_setr_epi32
#define _mm512_setzero_ps simde_mm512_setzero_ps
#define _mm512_setzero_si512 simde_mm512_setzero_si512
#define _mm512_shuffle_f32x4 simde_mm512_shuffle_f32x4
#define _mm512_shuffle_ps simde_mm512_shuffle_ps
#define _mm512_store_ps simde_mm512_store_ps
#define _mm512_storeu_ps simde_mm512_storeu_ps
#define _mm512_sub_epi32 simde_mm512_sub_epi32
#define _mm512_sub_ps simde_mm512_sub_ps
#define _mm512_test_epi32_mask simde_mm512_test_epi32_mask
#define _mm512_unpackhi_ps simde_mm512_unpackhi_ps
#define _mm512_unpacklo_ps simde_mm512_unpacklo_ps
#define _mm_add_ps simde_mm_add_ps
#define _mm_loadu_ps simde_mm_loadu_ps
#define _mm_storeu_ps simde_mm_storeu_ps
