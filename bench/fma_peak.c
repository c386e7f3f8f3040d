/* The FMA ceiling of this CPU: 12 independent vector FMA chains (throughput) and one dependent
 * chain (latency, hence the clock at 4 cycles per FMA). zmm when built for AVX-512, else ymm:
 *
 *     gcc -O2 -mavx512f -o /tmp/fma_peak bench/fma_peak.c && /tmp/fma_peak
 *     gcc -O2 -mavx2 -mfma -o /tmp/fma_peak bench/fma_peak.c && /tmp/fma_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifdef __AVX512F__
#define VEC __m512
#define SET1 _mm512_set1_ps
#define FMADD _mm512_fmadd_ps
#define ADD _mm512_add_ps
#else
#define VEC __m256
#define SET1 _mm256_set1_ps
#define FMADD _mm256_fmadd_ps
#define ADD _mm256_add_ps
#endif
#define LANES ((int)(sizeof(VEC) / sizeof(float)))

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const long n = 200000000;
  VEC a[12], b = SET1(0.999999f), c = SET1(1e-7f);
  for (int j = 0; j < 12; j++) a[j] = SET1(j * 0.001f);
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 12
      for (int j = 0; j < 12; j++) a[j] = FMADD(a[j], b, c);
    }
    double dt = now() - t0;
    VEC d = a[0];
    t0 = now();
    for (long i = 0; i < n; i++) {
      d = FMADD(d, b, c);
      __asm__ volatile("" : "+v"(d));
    }
    double dl = now() - t0;
    a[0] = ADD(a[0], d);
    printf("throughput %.1f GFLOP/s (%.2f G FMA/s); one chain %.2f G FMA/s"
           " (~%.2f GHz at 4 cycles)\n",
           n * 12 * 2 * LANES / dt / 1e9, n * 12 / dt / 1e9, n / dl / 1e9, 4 * n / dl / 1e9);
  }
  float s = 0;
  for (int j = 0; j < 12; j++) {
    float lanes[LANES];
    memcpy(lanes, &a[j], sizeof lanes);
    for (int l = 0; l < LANES; l++) s += lanes[l];
  }
  return s == 12345.f;  /* keep the sums live */
}
