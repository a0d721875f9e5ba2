/* bnlab's native CPU kernels (the "native" family, bnlab/kernels/native.py): per-channel batch norm on
 * dense float32/float64 tensors, NCHW (x viewed as N x C x S) or channels_last (x viewed as R = N*S rows of
 * C contiguous values). Plain C99 + OpenMP; built at first use by native.py and loaded with ctypes.
 *
 * Numerical policy (bnlab.moments): every reduction is shifted and accumulated in float64.
 *   - statistics: K_c = x[0, c, 0] (a sample value of the channel), d = (double)x - K_c is exact in float64,
 *     S1 = sum d, S2 = sum d^2, mu = K_c + S1/m, sigma^2 = (S2 - S1*(S1/m))/m. Since K_c is one of the
 *     values, (mu - K_c)^2 <= m*sigma^2, so the cancellation costs at most log10(m) of float64's 16 digits.
 *   - backward: sum g and sum g*(x - mu) (g = dy, masked where the fused ReLU output is <= 0), float64.
 * The elementwise passes compute in the data's dtype with per-channel coefficients computed once in float64.
 *
 * Determinism: every sum is taken in an order that depends on the shape only, never on the thread count
 * (NCHW: one channel per thread; channels_last: a fixed number of row blocks, merged in block order).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BNLAB_NATIVE_ABI 1
#define LANES 16    /* independent float64 accumulators per channel in NCHW rows (vectorized, 4 chains) */
#define BLOCKS 64   /* channels_last row blocks (fixed: the order of the sums never depends on threads) */
#ifndef CL_TILE
#define CL_TILE 32  /* channels_last: channels whose accumulators stay in registers */
#endif
#ifndef CL_CHUNK
#define CL_CHUNK 32 /* channels_last: rows per tile sweep (a chunk of rows stays in L1/L2) */
#endif
#define SHIFT_RATIO 16.0 /* bnlab.kernels.composed.SHIFT_RATIO */

typedef double v4d __attribute__((vector_size(32)));  /* GCC/Clang vector extensions */
typedef long long v4di __attribute__((vector_size(32)));

int bnlab_native_abi(void) { return BNLAB_NATIVE_ABI; }

/* mu and sigma^2 from shifted sums (bnlab.moments: the shifted two-pass of one set B); returns 1 if finite */
static int finish(double m, double k, double s1, double s2, double *mean, double *var) {
    double q = s1 / m;
    double v = (s2 - s1 * q) / m;
    *mean = k + q;
    *var = v > 0 ? v : 0;
    return isfinite(*mean) && isfinite(s2);
}

/* per-channel a, s, b of y = (x - s)*a + b (bnlab.kernels.composed.normalize: a = gamma/sqrt(var + eps),
 * s = mu where |mu|/sqrt(var + eps) > SHIFT_RATIO else 0, b = beta - a*(mu - s)) */
static void coefficients(int64_t c, const double *mean, const double *var, double eps, double *a, double *s,
                         double *b, const void *w, const void *bias, int is_double) {
    for (int64_t ch = 0; ch < c; ch++) {
        double invstd = 1.0 / sqrt(var[ch] + eps);
        double wc = w ? (is_double ? ((const double *)w)[ch] : ((const float *)w)[ch]) : 1.0;
        double bc = bias ? (is_double ? ((const double *)bias)[ch] : ((const float *)bias)[ch]) : 0.0;
        double shift = fabs(mean[ch]) * invstd > SHIFT_RATIO ? mean[ch] : 0.0;
        a[ch] = wc * invstd;
        s[ch] = shift;
        b[ch] = bc - a[ch] * (mean[ch] - shift);
    }
}

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define T float
#define SFX f32
#include "bn_body.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "bn_body.h"
#undef T
#undef SFX
