/* The FMA ceiling of this CPU: 12 independent zmm FMA chains (throughput) and one dependent
 * chain (latency, hence the clock at 4 cycles per FMA).
 *
 *     gcc -O2 -mavx512f -o /tmp/fma_peak bench/fma_peak.c && /tmp/fma_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const long n = 200000000;
  __m512 a[12], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int j = 0; j < 12; j++) a[j] = _mm512_set1_ps(j * 0.001f);
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 12
      for (int j = 0; j < 12; j++) a[j] = _mm512_fmadd_ps(a[j], b, c);
    }
    double dt = now() - t0;
    __m512 d = a[0];
    t0 = now();
    for (long i = 0; i < n; i++) {
      d = _mm512_fmadd_ps(d, b, c);
      __asm__ volatile("" : "+v"(d));
    }
    double dl = now() - t0;
    a[0] = _mm512_add_ps(a[0], d);
    printf("throughput %.1f GFLOP/s (%.2f G FMA/s); one chain %.2f G FMA/s"
           " (~%.2f GHz at 4 cycles)\n",
           n * 12 * 32 / dt / 1e9, n * 12 / dt / 1e9, n / dl / 1e9, 4 * n / dl / 1e9);
  }
  float s = 0;
  for (int j = 0; j < 12; j++) s += _mm512_reduce_add_ps(a[j]);
  return s == 12345.f;  /* keep the sums live */
}
