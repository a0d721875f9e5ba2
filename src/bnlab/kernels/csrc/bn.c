/* bnlab's native CPU kernels (the "native" family, bnlab/kernels/native.py): per-channel batch norm on
 * dense float32/float64 tensors, NCHW (x viewed as N x C x S) or channels_last (x viewed as R = N*S rows of
 * C contiguous values). Plain C99 + OpenMP; built at first use by native.py and loaded with ctypes.
 *
 * Numerical policy (bnlab.moments): every reduction is shifted and accumulated in float64.
 *   - statistics: K_c = x[0, c, 0] (a sample value of the channel), d = (double)x - K_c is exact in float64,
 *     S1 = sum d, S2 = sum d^2, mu = K_c + S1/m, sigma^2 = (S2 - S1*(S1/m))/m. Since K_c is one of the
 *     values, (mu - K_c)^2 <= m*sigma^2, so the cancellation costs at most log10(m) of float64's 16 digits.
 *   - backward: sum g and sum g*(x - mu) (g = dy, masked where the fused ReLU output is <= 0): float64 for
 *     float64 data; float32 data in float32 SIMD blocks of bounded length combined in float64 (the bound
 *     is stated with the code below).
 * The elementwise passes compute in the data's dtype with per-channel coefficients computed once in float64.
 *
 * Determinism: every sum is taken in an order that depends on the shape only, never on the thread count
 * (NCHW: a channel's sum is the sum of its rows in sample order, whichever thread takes its block of
 * channels; channels_last: a fixed number of row blocks, merged in block order).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define BNLAB_NATIVE_ABI 2
#define LANES 16    /* NCHW rows: values per step into 4 vectors of float64 accumulators (4 chains) */
#define NCHW_CB 16 /* NCHW: channels per block of work (read sample by sample) */
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

/* ---- the backward's reductions: sum g and sum g*(x - mu) (g = dy, 0 where the fused ReLU output is <= 0) ----
 *
 * float32 data: float32 SIMD accumulators over bounded blocks, combined in float64. Each float32 lane adds at
 * most F32_TERMS terms t_i = g_i*(x_i - mu) (x_i - mu rounded once, the product rounded once or fused) before
 * it is added to a float64 accumulator, so with u = 2^-24 the error of each sum is at most
 *     |err(sum g*(x - mu))| <= (F32_TERMS + 1)*u*sum|g*(x - mu)|  ~ 5.4e-7 * sum|g*(x - mu)|,
 *     |err(sum g)|          <= (F32_TERMS - 1)*u*sum|g|
 * (first order; the float64 additions of the blocks add about 2^-53 per block), whatever the count m: a
 * float32 running sum's bound grows as m*u. mu is the float32 mean the forward returned, as in the
 * definition (composed.backward reads the saved statistics); float64 data: float64 accumulators. */
#define F32_TERMS 8

typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

static inline v8f ld8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* g where ym > 0, else 0 (ym NULL: g) */
static inline v8f masked8(const float *g, const float *ym, int64_t o) {
    v8f u = ld8(g + o);
    return ym ? (v8f)((v8i)u & (ld8(ym + o) > 0)) : u;
}

/* the 8 float32 lanes of a added to lo (lanes 0-3) and hi (lanes 4-7) in float64 */
static inline void widen_add(v8f a, v4d *lo, v4d *hi) {
#if defined(__AVX__)
    *lo += (v4d)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)a));
    *hi += (v4d)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)a, 1));
#else
    v4f l, h;
    memcpy(&l, &a, sizeof l);
    memcpy(&h, (const char *)&a + sizeof l, sizeof h);
    *lo += __builtin_convertvector(l, v4d);
    *hi += __builtin_convertvector(h, v4d);
#endif
}

static inline double hsum4(v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }

/* one contiguous NCHW row of s float32 values: *t1 += sum g, *t2 += sum g*(x - mu). Blocks of at most
 * 16*F32_TERMS values, 16 at a time into two float32 accumulator pairs (<= F32_TERMS terms per lane), then
 * widened to float64; the last s mod 8 values in float64. */
static void bwd_row_f32(const float *g, const float *x, const float *ym, int64_t s, float mu, double *t1,
                        double *t2) {
    const v8f m = (v8f){0} + mu;
    v4d w1[2] = {{0}}, w2[2] = {{0}};
    int64_t j = 0;
    while (j + 8 <= s) {
        const int64_t end = j + 16 * F32_TERMS < s ? j + 16 * F32_TERMS : s;
        v8f a1 = {0}, a2 = {0}, b1 = {0}, b2 = {0};
        for (; j + 16 <= end; j += 16) {
            v8f u = masked8(g, ym, j), v = masked8(g, ym, j + 8);
            a1 += u;
            a2 += u * (ld8(x + j) - m);
            b1 += v;
            b2 += v * (ld8(x + j + 8) - m);
        }
        if (j + 8 <= end) {
            v8f u = masked8(g, ym, j);
            a1 += u;
            a2 += u * (ld8(x + j) - m);
            j += 8;
        }
        widen_add(a1, &w1[0], &w1[1]);
        widen_add(b1, &w1[0], &w1[1]);
        widen_add(a2, &w2[0], &w2[1]);
        widen_add(b2, &w2[0], &w2[1]);
    }
    double r1 = 0, r2 = 0;
    for (; j < s; j++) {
        double u = (ym && !(ym[j] > 0)) ? 0.0 : (double)g[j];
        r1 += u;
        r2 += u * ((double)x[j] - (double)mu);
    }
    *t1 += r1 + hsum4(w1[0] + w1[1]);
    *t2 += r2 + hsum4(w2[0] + w2[1]);
}

/* the same for float64 data: float64 accumulators, 4 vectors (independent chains) */
static void bwd_row_f64(const double *g, const double *x, const double *ym, int64_t s, double mu, double *t1,
                        double *t2) {
    const v4d m = (v4d){0} + mu;
    v4d a1[4] = {{0}}, a2[4] = {{0}};
    int64_t j = 0;
    for (; j + 16 <= s; j += 16)
        for (int q = 0; q < 4; q++) {
            v4d u, v;
            memcpy(&u, g + j + 4 * q, sizeof u);
            memcpy(&v, x + j + 4 * q, sizeof v);
            if (ym) {
                v4d y;
                memcpy(&y, ym + j + 4 * q, sizeof y);
                u = (v4d)((v4di)u & (y > 0));
            }
            a1[q] += u;
            a2[q] += u * (v - m);
        }
    double r1 = 0, r2 = 0;
    for (; j < s; j++) {
        double u = (ym && !(ym[j] > 0)) ? 0.0 : g[j];
        r1 += u;
        r2 += u * (x[j] - mu);
    }
    *t1 += r1 + hsum4((a1[0] + a1[1]) + (a1[2] + a1[3]));
    *t2 += r2 + hsum4((a2[0] + a2[1]) + (a2[2] + a2[3]));
}

/* channels_last, float32: one tile of 8*NQ channels over rows [q0, q1), added into p1, p2. Rows alternate
 * between two float32 accumulator sets, which are widened to float64 every 2*F32_TERMS rows. */
static inline __attribute__((always_inline)) void cl_bwd_tile_f32(const float *x, const float *g,
        const float *ym, int64_t q0, int64_t q1, int64_t c, int64_t ch0, const int NQ, const float *mu,
        double *p1, double *p2) {
    v8f m[NQ];
    v4d w1[2 * NQ], w2[2 * NQ];
    for (int q = 0; q < NQ; q++) {
        m[q] = ld8(mu + ch0 + 8 * q);
        w1[2 * q] = w1[2 * q + 1] = w2[2 * q] = w2[2 * q + 1] = (v4d){0, 0, 0, 0};
    }
    for (int64_t r0 = q0; r0 < q1; r0 += 2 * F32_TERMS) {
        const int64_t r1 = r0 + 2 * F32_TERMS < q1 ? r0 + 2 * F32_TERMS : q1;
        v8f a1[NQ], a2[NQ], b1[NQ], b2[NQ];
        for (int q = 0; q < NQ; q++) a1[q] = a2[q] = b1[q] = b2[q] = (v8f){0};
        int64_t r = r0;
        for (; r + 2 <= r1; r += 2)
            for (int q = 0; q < NQ; q++) {
                const int64_t o = r * c + ch0 + 8 * q;
                v8f u = masked8(g, ym, o), v = masked8(g, ym, o + c);
                a1[q] += u;
                a2[q] += u * (ld8(x + o) - m[q]);
                b1[q] += v;
                b2[q] += v * (ld8(x + o + c) - m[q]);
            }
        if (r < r1)
            for (int q = 0; q < NQ; q++) {
                const int64_t o = r * c + ch0 + 8 * q;
                v8f u = masked8(g, ym, o);
                a1[q] += u;
                a2[q] += u * (ld8(x + o) - m[q]);
            }
        for (int q = 0; q < NQ; q++) {
            widen_add(a1[q], &w1[2 * q], &w1[2 * q + 1]);
            widen_add(b1[q], &w1[2 * q], &w1[2 * q + 1]);
            widen_add(a2[q], &w2[2 * q], &w2[2 * q + 1]);
            widen_add(b2[q], &w2[2 * q], &w2[2 * q + 1]);
        }
    }
    for (int q = 0; q < 2 * NQ; q++)
        for (int l = 0; l < 4; l++) {
            p1[ch0 + 4 * q + l] += w1[q][l];
            p2[ch0 + 4 * q + l] += w2[q][l];
        }
}

/* channels_last, float32: sum g and sum g*(x - mu) over rows [r0, r1) of C values, added into p1, p2: chunks
 * of CL_CHUNK rows, tiles of 16 and 8 channels, the last C mod 8 channels in float64 */
static void cl_bwd_sums_f32(const float *x, const float *g, const float *ym, int64_t r0, int64_t r1, int64_t c,
                            const float *mu, double *p1, double *p2) {
    for (int64_t q0 = r0; q0 < r1; q0 += CL_CHUNK) {
        const int64_t q1 = q0 + CL_CHUNK < r1 ? q0 + CL_CHUNK : r1;
        int64_t ch0 = 0;
        for (; ch0 + 16 <= c; ch0 += 16) cl_bwd_tile_f32(x, g, ym, q0, q1, c, ch0, 2, mu, p1, p2);
        for (; ch0 + 8 <= c; ch0 += 8) cl_bwd_tile_f32(x, g, ym, q0, q1, c, ch0, 1, mu, p1, p2);
        for (int64_t r = q0; r < q1 && ch0 < c; r++)
            for (int64_t ch = ch0; ch < c; ch++) {
                const int64_t o = r * c + ch;
                double u = (ym && !(ym[o] > 0)) ? 0.0 : (double)g[o];
                p1[ch] += u;
                p2[ch] += u * ((double)x[o] - (double)mu[ch]);
            }
    }
}

/* ---- streaming stores ----
 * An output larger than NT_BYTES (beyond the L2 cache: it goes out to memory anyway) is written with
 * non-temporal stores: a normal store first reads the line it writes (write-allocate), so an elementwise pass
 * moves 3 bytes per byte of output instead of 2. Only where every row starts on a cache line (NCHW: H*W a
 * multiple of 16 floats and y 64-byte aligned; channels_last: C a multiple of 8, y 32-byte aligned): a line
 * written partly by streaming and partly by normal stores is flushed half-full (measured 4x slower at 14x14).
 * Each thread ends its part with an sfence (the stores are visible before the kernel returns). */
#define NT_BYTES (4 << 20)
#if defined(__AVX__)
#define HAVE_NT 1
static inline void put8(float *p, v8f v, int stream) {
    if (stream) _mm256_stream_ps(p, (__m256)v);
    else memcpy(p, &v, sizeof v);
}
static inline void fence(int stream) { if (stream) _mm_sfence(); }
#else
#define HAVE_NT 0
static inline void put8(float *p, v8f v, int stream) { (void)stream; memcpy(p, &v, sizeof v); }
static inline void fence(int stream) { (void)stream; }
#endif

/* whether an NCHW float32 output of n*c rows of s values at y is written with streaming stores (above) */
static inline int nchw_stream(const void *y, int64_t rows, int64_t s) {
    return HAVE_NT && (double)rows * s * sizeof(float) > NT_BYTES && s % 16 == 0 && ((uintptr_t)y & 63) == 0;
}

/* NCHW row, float32: y = (x - sc)*ac + bc (relu: max(y, 0)) */
static void affine_row_f32(const float *x, float *y, int64_t s, float ac, float sc, float bc, int relu, int stream) {
    const v8f A = (v8f){0} + ac, S = (v8f){0} + sc, B = (v8f){0} + bc, Z = {0};
    int64_t j = 0;
    for (; j + 8 <= s; j += 8) {
        v8f v = (ld8(x + j) - S) * A + B;
        if (relu) v = (v8f)((v8i)v & (v > Z));
        put8(y + j, v, stream);
    }
    for (; j < s; j++) { float v = (x[j] - sc) * ac + bc; y[j] = relu && v < 0 ? 0.0f : v; }
}

/* ---- NCHW rows whose length is not a multiple of a cache line (14x14, odd sizes) ----
 * Rows [r0, r1) of s >= 8 values are written as one flat run: whole 64-byte lines with streaming stores, a vector
 * of 8 values that straddles two rows (two channels) taking each row's coefficients lane by lane; the values
 * before the run's first line boundary and after its last are written with normal stores. Each thread takes one
 * such run (a contiguous block of rows), so a line is split between two kinds of store at most at the run's two
 * ends. The arithmetic per value is that of affine_row_f32 / dx_row_f32. */
static const v8i LANE = {0, 1, 2, 3, 4, 5, 6, 7};

static inline v8f pick8(v8i first, float a, float b) {
    return (v8f)((first & (v8i)((v8f){0} + a)) | (~first & (v8i)((v8f){0} + b)));
}

#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#define THREADS omp_get_num_threads()
#else
#define THREAD_ID 0
#define THREADS 1
#endif

/* the flat run of a thread: rows [r0, r1) of n_rows, split evenly */
#define THREAD_ROWS(n_rows, r0, r1)                                    \
    const int64_t r0 = (n_rows) * THREAD_ID / THREADS, r1 = (n_rows) * (THREAD_ID + 1) / THREADS

/* whether an NCHW float32 output of rows of s values is written by the flat runs above */
static inline int nchw_flat_stream(int64_t rows, int64_t s) {
    return HAVE_NT && (double)rows * s * sizeof(float) > NT_BYTES && s % 16 != 0 && s >= 8;
}

/* y = (x - S[ch])*A[ch] + B[ch] (relu: max(y, 0)) over rows [r0, r1), ch = row mod c, as a flat streamed run */
static void affine_flat_f32(const float *x, float *y, int64_t r0, int64_t r1, int64_t s, int64_t c,
                            const float *A, const float *S, const float *B, int relu) {
    int64_t p = r0 * s, end = r1 * s, rend = p + s, ch = r0 % c;
    const v8f Z = {0};
    int64_t body = end;
    while (body > p && ((uintptr_t)(y + body) & 63)) body--;  /* the last line boundary of the run */
    for (; p < end; ) {
        if (p == rend) { rend += s; ch = ch + 1 == c ? 0 : ch + 1; }
        if (((uintptr_t)(y + p) & 63) == 0 && p + 8 <= body) break;
        float v = (x[p] - S[ch]) * A[ch] + B[ch];
        y[p++] = relu && v < 0 ? 0.0f : v;
    }
    for (; p + 8 <= body; p += 8) {
        if (p >= rend) { rend += s; ch = ch + 1 == c ? 0 : ch + 1; }
        const int64_t k = rend - p;  /* values of this vector in row ch: all 8, or the first k (s >= 8) */
        v8f a, sh, b;
        if (k >= 8) {
            a = (v8f){0} + A[ch]; sh = (v8f){0} + S[ch]; b = (v8f){0} + B[ch];
        } else {
            const int64_t nx = ch + 1 == c ? 0 : ch + 1;
            const v8i first = LANE < (int)k;
            a = pick8(first, A[ch], A[nx]); sh = pick8(first, S[ch], S[nx]); b = pick8(first, B[ch], B[nx]);
        }
        v8f v = (ld8(x + p) - sh) * a + b;
        if (relu) v = (v8f)((v8i)v & (v > Z));
        put8(y + p, v, 1);
    }
    for (; p < end; p++) {
        if (p >= rend) { rend += s; ch = ch + 1 == c ? 0 : ch + 1; }
        float v = (x[p] - S[ch]) * A[ch] + B[ch];
        y[p] = relu && v < 0 ? 0.0f : v;
    }
}

/* dx = g*C1[ch] + (D1[ch]*(x - M[ch]) + E1[ch]), g = dy (0 where ym <= 0), over rows [r0, r1) as a flat run */
static void dx_flat_f32(const float *g, const float *x, const float *ym, float *o, int64_t r0, int64_t r1,
                        int64_t s, int64_t c, const float *C1, const float *D1, const float *E1, const float *M) {
    int64_t p = r0 * s, end = r1 * s, rend = p + s, ch = r0 % c;
    int64_t body = end;
    while (body > p && ((uintptr_t)(o + body) & 63)) body--;
    for (; p < end; ) {
        if (p == rend) { rend += s; ch = ch + 1 == c ? 0 : ch + 1; }
        if (((uintptr_t)(o + p) & 63) == 0 && p + 8 <= body) break;
        o[p] = (ym && !(ym[p] > 0) ? 0.0f : g[p]) * C1[ch] + (D1[ch] * (x[p] - M[ch]) + E1[ch]);
        p++;
    }
    for (; p + 8 <= body; p += 8) {
        if (p >= rend) { rend += s; ch = ch + 1 == c ? 0 : ch + 1; }
        const int64_t k = rend - p;
        v8f c1, d1, e1, m;
        if (k >= 8) {
            c1 = (v8f){0} + C1[ch]; d1 = (v8f){0} + D1[ch]; e1 = (v8f){0} + E1[ch]; m = (v8f){0} + M[ch];
        } else {
            const int64_t nx = ch + 1 == c ? 0 : ch + 1;
            const v8i first = LANE < (int)k;
            c1 = pick8(first, C1[ch], C1[nx]); d1 = pick8(first, D1[ch], D1[nx]);
            e1 = pick8(first, E1[ch], E1[nx]); m = pick8(first, M[ch], M[nx]);
        }
        put8(o + p, masked8(g, ym, p) * c1 + (d1 * (ld8(x + p) - m) + e1), 1);
    }
    for (; p < end; p++) {
        if (p >= rend) { rend += s; ch = ch + 1 == c ? 0 : ch + 1; }
        o[p] = (ym && !(ym[p] > 0) ? 0.0f : g[p]) * C1[ch] + (D1[ch] * (x[p] - M[ch]) + E1[ch]);
    }
}

/* NCHW row, float32: dx = g*c1 + (d1*(x - mu) + e1), g = dy (0 where ym <= 0) */
static void dx_row_f32(const float *g, const float *x, const float *ym, float *o, int64_t s, float c1, float d1,
                       float e1, float mu, int stream) {
    const v8f C1 = (v8f){0} + c1, D1 = (v8f){0} + d1, E1 = (v8f){0} + e1, M = (v8f){0} + mu;
    int64_t j = 0;
    for (; j + 8 <= s; j += 8) put8(o + j, masked8(g, ym, j) * C1 + (D1 * (ld8(x + j) - M) + E1), stream);
    for (; j < s; j++) o[j] = (ym && !(ym[j] > 0) ? 0.0f : g[j]) * c1 + (d1 * (x[j] - mu) + e1);
}

/* channels_last streaming (C a multiple of 8, y 32-byte aligned: every row starts on a boundary). Whether a
 * channels_last float32 output of these many bytes at y is written with streaming stores. */
static inline int cl_stream(const void *y, int64_t c, double bytes) {
    return HAVE_NT && bytes > NT_BYTES && c % 8 == 0 && ((uintptr_t)y & 31) == 0;
}

/* channels_last row of C float32 values, streamed: y = (x - sc)*ac + bc (relu: max(y, 0)) */
static inline void cl_affine_row_f32(const float *x, float *y, int64_t c, const float *ac, const float *sc,
                                     const float *bc, int relu) {
    const v8f Z = {0};
    for (int64_t ch = 0; ch < c; ch += 8) {
        v8f v = (ld8(x + ch) - ld8(sc + ch)) * ld8(ac + ch) + ld8(bc + ch);
        if (relu) v = (v8f)((v8i)v & (v > Z));
        put8(y + ch, v, 1);
    }
}

/* channels_last row of C float32 values, streamed: dx = g*c1 + (d1*(x - mu) + e1) */
static inline void cl_dx_row_f32(const float *g, const float *x, const float *ym, float *o, int64_t c,
                                 const float *c1, const float *d1, const float *e1, const float *mu) {
    for (int64_t ch = 0; ch < c; ch += 8)
        put8(o + ch, masked8(g, ym, ch) * ld8(c1 + ch) + (ld8(d1 + ch) * (ld8(x + ch) - ld8(mu + ch)) + ld8(e1 + ch)), 1);
}

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* ---- the NCHW backward, fused ----
 * The backward's two passes (the sums, then dx) each read x and dy. Where a channel's x and dy (and the fused
 * ReLU's output) fit in half the L2 cache, bn_backward takes a block of channels at a time, its sums then its
 * dx, so the second read comes from L2; fused_channels is the block's size (0: one channel does not fit, the
 * two passes run over the whole tensor). Rows shorter than FUSE_ROW_BYTES are not fused: a block of them is
 * read as many short runs, which the prefetcher follows worse than the two passes' long ones (256x32x8x8
 * measured 7-16 % slower fused, 28x28 rows and longer 12-21 % faster). The block size changes no result (each
 * channel's sums are its rows in sample order either way); blocks are at most c/nt channels, so that every
 * thread has one. */
#define FUSE_ROW_BYTES 2048
static double l2_bytes(void) {
    static double bytes = 0;
    if (bytes == 0) {
        long v = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
        v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        bytes = v > 0 ? (double)v : (double)(1 << 20);
    }
    return bytes;
}

static int64_t fused_channels(int64_t n, int64_t c, int64_t s, size_t size, int has_y, int nt) {
    const double per = (double)n * (double)s * (double)size * (has_y ? 3 : 2), budget = l2_bytes() / 2;
    if (per > budget || (double)s * (double)size < FUSE_ROW_BYTES) return 0;
    int64_t k = (int64_t)(budget / per);
    const int64_t share = (c + nt - 1) / nt;
    if (k > share) k = share;
    return k < 1 ? 1 : k;
}

#define T float
#define SFX f32
#define IS_F32 1
#include "bn_body.h"
#undef T
#undef SFX
#undef IS_F32

#define T double
#define SFX f64
#define IS_F32 0
#include "bn_body.h"
#undef T
#undef SFX
#undef IS_F32
