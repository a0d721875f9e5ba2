/* bnlab native kernels, written once for a float type: bn.c includes this file with T = float, SFX = f32 and
 * T = double, SFX = f64 (every function name ends in _f32 / _f64). */
/* 4 values of T from memory (any alignment), as float64 */
static inline v4d CAT(load4_, SFX)(const T *p) {
#if defined(__AVX__)
    /* the generic form below compiles (GCC 12) to 2-value loads and conversions: 2x slower */
    if (sizeof(T) == 4) return (v4d)_mm256_cvtps_pd(_mm_loadu_ps((const float *)p));
#endif
    T v __attribute__((vector_size(4 * sizeof(T))));
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, v4d);
}

/* shifted float64 sums of one contiguous row of s values: *t1 += sum d, *t2 += sum d^2, d = x - k. 16 values
 * at a time into 4 vectors of float64 accumulators (4 independent chains hide the add latency), the last
 * s mod 16 one at a time; the row's sums are added to the channel's once. */
static inline void CAT(row_stats_, SFX)(const T *row, int64_t s, double k, double *t1, double *t2) {
    const v4d kk = {k, k, k, k};
    v4d a1[4] = {{0}}, a2[4] = {{0}};
    double r1 = 0, r2 = 0;
    int64_t j = 0;
    for (; j + LANES <= s; j += LANES)
        for (int q = 0; q < 4; q++) {
            v4d d = CAT(load4_, SFX)(row + j + 4 * q) - kk;
            a1[q] += d;
            a2[q] += d * d;
        }
    for (; j < s; j++) {
        double d = (double)row[j] - k;
        r1 += d;
        r2 += d * d;
    }
    v4d b1 = (a1[0] + a1[1]) + (a1[2] + a1[3]), b2 = (a2[0] + a2[1]) + (a2[2] + a2[3]);
    *t1 += r1 + ((b1[0] + b1[1]) + (b1[2] + b1[3]));
    *t2 += r2 + ((b2[0] + b2[1]) + (b2[2] + b2[3]));
}

/* statistics (bnlab.moments.batch_stats): shifted float64 sums; NCHW. Threads take blocks of NCHW_CB channels
 * and read them in memory order (sample by sample: rows of a short H*W are not far apart, the prefetcher
 * follows); each channel's sum is the sum of its rows in sample order, whatever the blocks and threads. */
static int CAT(stats_nchw_, SFX)(const T *x, int64_t n, int64_t c, int64_t s, double *mean, double *var, int nt) {
    double *acc = (double *)calloc((size_t)(3 * c), sizeof(double));
    if (!acc) return -1;
    double *k = acc + 2 * c;
    for (int64_t ch = 0; ch < c; ch++) k[ch] = (double)x[ch * s];
    const int64_t nb = (c + NCHW_CB - 1) / NCHW_CB;
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (int64_t cb = 0; cb < nb; cb++) {
        const int64_t c0 = cb * NCHW_CB, c1 = c0 + NCHW_CB < c ? c0 + NCHW_CB : c;
        for (int64_t i = 0; i < n; i++)
            for (int64_t ch = c0; ch < c1; ch++)
                CAT(row_stats_, SFX)(x + (i * c + ch) * s, s, k[ch], acc + ch, acc + c + ch);
    }
    int ok = 1;
    for (int64_t ch = 0; ch < c; ch++)
        ok = finish((double)n * (double)s, k[ch], acc[ch], acc[c + ch], mean + ch, var + ch) && ok;
    free(acc);
    return ok;
}

/* one tile of 4*NQ channels (NQ <= CL_TILE/4) over rows [q0, q1): float64 accumulators in registers */
static inline __attribute__((always_inline)) void CAT(cl_tile_, SFX)(const T *x, const T *g, const T *ym, int64_t q0,
        int64_t q1, int64_t c, int64_t ch0, const int NQ, const double *k, double *p1, double *p2) {
    v4d a1[NQ], a2[NQ], kk[NQ];
    for (int q = 0; q < NQ; q++) {
        a1[q] = (v4d){0, 0, 0, 0};
        a2[q] = (v4d){0, 0, 0, 0};
        memcpy(&kk[q], k + ch0 + 4 * q, sizeof(v4d));
    }
    if (!g) {
        for (int64_t r = q0; r < q1; r++) {
            const T *row = x + r * c + ch0;
            for (int q = 0; q < NQ; q++) {
                v4d d = CAT(load4_, SFX)(row + 4 * q) - kk[q];
                a1[q] += d;
                a2[q] += d * d;
            }
        }
    } else {
        for (int64_t r = q0; r < q1; r++) {
            const T *row = x + r * c + ch0, *gr = g + r * c + ch0;
            for (int q = 0; q < NQ; q++) {
                v4d u = CAT(load4_, SFX)(gr + 4 * q);
                if (ym) u = (v4d)((v4di)u & (CAT(load4_, SFX)(ym + r * c + ch0 + 4 * q) > 0));
                a1[q] += u;
                a2[q] += u * (CAT(load4_, SFX)(row + 4 * q) - kk[q]);
            }
        }
    }
    for (int q = 0; q < NQ; q++)
        for (int l = 0; l < 4; l++) {
            p1[ch0 + 4 * q + l] += a1[q][l];
            p2[ch0 + 4 * q + l] += a2[q][l];
        }
}

/* channels_last partial sums over rows [r0, r1) of C values each, added into p1, p2 (C doubles each):
 * g = NULL: u = x - k, p1 += u, p2 += u*u (statistics); else u = g (0 where ym <= 0), p1 += u,
 * p2 += u*(x - k) (backward). Rows go in chunks of CL_CHUNK, channels in tiles of CL_TILE whose float64
 * accumulators stay in registers (the loop over the tile vectorizes); the order depends on the shape only. */
static void CAT(cl_sums_, SFX)(const T *x, const T *g, const T *ym, int64_t r0, int64_t r1, int64_t c,
                               const double *k, double *p1, double *p2) {
    for (int64_t q0 = r0; q0 < r1; q0 += CL_CHUNK) {
        const int64_t q1 = q0 + CL_CHUNK < r1 ? q0 + CL_CHUNK : r1;
        int64_t ch0 = 0;
        for (; ch0 + CL_TILE <= c; ch0 += CL_TILE) CAT(cl_tile_, SFX)(x, g, ym, q0, q1, c, ch0, CL_TILE / 4, k, p1, p2);
        for (; ch0 + 4 <= c; ch0 += 4) CAT(cl_tile_, SFX)(x, g, ym, q0, q1, c, ch0, 1, k, p1, p2);
        if (ch0 == c) continue;
        for (int64_t r = q0; r < q1; r++) {
            const int64_t o = r * c;
            for (int64_t ch = ch0; ch < c; ch++) {
                double xd = (double)x[o + ch] - k[ch];
                double u = g ? ((ym && !(ym[o + ch] > 0)) ? 0.0 : (double)g[o + ch]) : xd;
                p1[ch] += u;
                p2[ch] += g ? u * xd : xd * xd;
            }
        }
    }
}

/* statistics, channels_last: whole rows of C at once (the loop over C vectorizes), BLOCKS row blocks */
static int CAT(stats_cl_, SFX)(const T *x, int64_t rows, int64_t c, double *mean, double *var, int nt) {
    int64_t nb = rows < BLOCKS ? rows : BLOCKS;
    double *part = (double *)calloc((size_t)(2 * nb * c + c), sizeof(double));
    if (!part) return -1;
    double *k = part + 2 * nb * c;
    for (int64_t ch = 0; ch < c; ch++) k[ch] = (double)x[ch];
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (int64_t b = 0; b < nb; b++)
        CAT(cl_sums_, SFX)(x, NULL, NULL, rows * b / nb, rows * (b + 1) / nb, c, k, part + 2 * b * c, part + 2 * b * c + c);
    int ok = 1;
    for (int64_t ch = 0; ch < c; ch++) {
        double t1 = 0, t2 = 0;
        for (int64_t b = 0; b < nb; b++) { t1 += part[2 * b * c + ch]; t2 += part[2 * b * c + c + ch]; }
        ok = finish((double)rows, k[ch], t1, t2, mean + ch, var + ch) && ok;
    }
    free(part);
    return ok;
}

/* y = (x - s)*a + b per channel, then max(y, 0) if relu (composed.normalize; one pass) */
static void CAT(affine_, SFX)(const T *x, int64_t n, int64_t c, int64_t s, int cl, const double *a,
                         const double *sh, const double *b, int relu, T *y, int nt) {
    if (!cl) {
#if IS_F32
        if (nchw_flat_stream(n * c, s)) {
            float *co = (float *)malloc((size_t)(3 * c) * sizeof(float));
            if (co) {
                for (int64_t ch = 0; ch < c; ch++) { co[ch] = (float)a[ch]; co[c + ch] = (float)sh[ch]; co[2 * c + ch] = (float)b[ch]; }
                #pragma omp parallel num_threads(nt) if(nt > 1)
                {
                    THREAD_ROWS(n * c, r0, r1);
                    affine_flat_f32(x, y, r0, r1, s, c, co, co + c, co + 2 * c, relu);
                    fence(1);
                }
                free(co);
                return;
            }
        }
        const int stream = nchw_stream(y, n * c, s);
        #pragma omp parallel num_threads(nt) if(nt > 1)
        {
            #pragma omp for schedule(static) nowait
            for (int64_t r = 0; r < n * c; r++) {
                const int64_t ch = r % c;
                affine_row_f32(x + r * s, y + r * s, s, (float)a[ch], (float)sh[ch], (float)b[ch], relu, stream);
            }
            fence(stream);
        }
#else
        #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
        for (int64_t r = 0; r < n * c; r++) {
            const int64_t ch = r % c;
            const T ac = (T)a[ch], sc = (T)sh[ch], bc = (T)b[ch];
            const T *xr = x + r * s;
            T *yr = y + r * s;
            if (relu) {
                #pragma omp simd
                for (int64_t j = 0; j < s; j++) { T v = (xr[j] - sc) * ac + bc; yr[j] = v < 0 ? (T)0 : v; }
            } else {
                #pragma omp simd
                for (int64_t j = 0; j < s; j++) yr[j] = (xr[j] - sc) * ac + bc;
            }
        }
#endif
        return;
    }
    T *co = (T *)malloc((size_t)(3 * c) * sizeof(T));
    if (!co) return;
    for (int64_t ch = 0; ch < c; ch++) { co[ch] = (T)a[ch]; co[c + ch] = (T)sh[ch]; co[2 * c + ch] = (T)b[ch]; }
    const T *ac = co, *sc = co + c, *bc = co + 2 * c;
#if IS_F32
    if (cl_stream(y, c, (double)n * c * s * sizeof(T))) {
        #pragma omp parallel num_threads(nt) if(nt > 1)
        {
            #pragma omp for schedule(static) nowait
            for (int64_t r = 0; r < n * s; r++) cl_affine_row_f32(x + r * c, y + r * c, c, ac, sc, bc, relu);
            fence(1);
        }
        free(co);
        return;
    }
#endif
    #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
    for (int64_t r = 0; r < n * s; r++) {
        const T *xr = x + r * c;
        T *yr = y + r * c;
        if (relu) {
            #pragma omp simd
            for (int64_t ch = 0; ch < c; ch++) { T v = (xr[ch] - sc[ch]) * ac[ch] + bc[ch]; yr[ch] = v < 0 ? (T)0 : v; }
        } else {
            #pragma omp simd
            for (int64_t ch = 0; ch < c; ch++) yr[ch] = (xr[ch] - sc[ch]) * ac[ch] + bc[ch];
        }
    }
    free(co);
}

/* training forward (composed.forward): statistics, then one fused normalize pass. Returns 1, 0 if some
 * statistic is not finite (the caller falls back), -1 out of memory. mean/var out in T. */
int CAT(bn_forward_, SFX)(const T *x, int64_t n, int64_t c, int64_t s, int cl, const T *w, const T *bias,
                     double eps, int relu, T *y, T *mean_out, T *var_out, int nt) {
    double *buf = (double *)malloc((size_t)(5 * c) * sizeof(double));
    if (!buf) return -1;
    double *mean = buf, *var = buf + c, *a = buf + 2 * c, *sh = buf + 3 * c, *b = buf + 4 * c;
    int ok = cl ? CAT(stats_cl_, SFX)(x, n * s, c, mean, var, nt) : CAT(stats_nchw_, SFX)(x, n, c, s, mean, var, nt);
    if (ok == 1) {
        for (int64_t ch = 0; ch < c; ch++) { mean_out[ch] = (T)mean[ch]; var_out[ch] = (T)var[ch]; }
        coefficients(c, mean, var, eps, a, sh, b, w, bias, sizeof(T) == 8);
        if (y) CAT(affine_, SFX)(x, n, c, s, cl, a, sh, b, relu, y, nt);
    }
    free(buf);
    return ok;
}

/* statistics only, kept in float64 (bnlab.moments.batch_stats before bn_forward rounds them to T): synchronized
 * BN merges the shards' statistics in float64 (Chan), where a mean rounded to float32 would cost up to
 * ~2.4e-7*|mu|/sigma of sigma^2 (bnlab.distributed). Returns as bn_forward. */
int CAT(bn_stats64_, SFX)(const T *x, int64_t n, int64_t c, int64_t s, int cl, double *mean, double *var, int nt) {
    return cl ? CAT(stats_cl_, SFX)(x, n * s, c, mean, var, nt) : CAT(stats_nchw_, SFX)(x, n, c, s, mean, var, nt);
}

/* eval / normalize with given statistics (composed.normalize): one fused multiply-add pass */
int CAT(bn_normalize_, SFX)(const T *x, int64_t n, int64_t c, int64_t s, int cl, const T *mean_in, const T *var_in,
                       const T *w, const T *bias, double eps, T *y, int nt) {
    double *buf = (double *)malloc((size_t)(5 * c) * sizeof(double));
    if (!buf) return -1;
    double *mean = buf, *var = buf + c, *a = buf + 2 * c, *sh = buf + 3 * c, *b = buf + 4 * c;
    for (int64_t ch = 0; ch < c; ch++) { mean[ch] = mean_in[ch]; var[ch] = var_in[ch]; }
    coefficients(c, mean, var, eps, a, sh, b, w, bias, sizeof(T) == 8);
    CAT(affine_, SFX)(x, n, c, s, cl, a, sh, b, 0, y, nt);
    free(buf);
    return 1;
}

/* dx = g*c1 + (d1*(x - mu) + e1) over one NCHW row of s values, g = dy (0 where ym <= 0): float32 in 8-wide
 * vectors (streaming stores if stream), float64 one value at a time */
static inline void CAT(grad_row_, SFX)(const T *g, const T *x, const T *ym, T *o, int64_t s, double c1, double d1,
                                     double e1, T mu, int stream) {
#if IS_F32
    dx_row_f32(g, x, ym, o, s, (float)c1, (float)d1, (float)e1, mu, stream);
#else
    (void)stream;
    const T cc = (T)c1, dd = (T)d1, ee = (T)e1;
    if (ym) {
        #pragma omp simd
        for (int64_t j = 0; j < s; j++) o[j] = (ym[j] > 0 ? g[j] : (T)0) * cc + (dd * (x[j] - mu) + ee);
    } else {
        #pragma omp simd
        for (int64_t j = 0; j < s; j++) o[j] = g[j] * cc + (dd * (x[j] - mu) + ee);
    }
#endif
}

/* NCHW, channels [c0, c1): sum g and sum g*(x - mu) of each channel's rows, in sample order (the order the
 * backward's sums are defined in, whatever the blocks and threads) */
static inline void CAT(block_sums_, SFX)(const T *dy, const T *x, const T *yr, int64_t n, int64_t c, int64_t s,
                                         int64_t c0, int64_t c1, const T *mean_in, double *s1, double *s2) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = c0; ch < c1; ch++) {
            const int64_t o = (i * c + ch) * s;
            CAT(bwd_row_, SFX)(dy + o, x + o, yr ? yr + o : NULL, s, mean_in[ch], s1 + ch, s2 + ch);
        }
}

/* dx = c*g + d*(x - mu) + e per channel (composed.grad_coefficients), from the sums of m values */
static inline void CAT(dx_coefficients_, SFX)(int64_t ch, const T *w, const double *invstd, double sum_dy,
                                              double sum_dy_xhat, double m, double *cc, double *dd, double *ee) {
    double gc = w ? (double)w[ch] * invstd[ch] : invstd[ch];
    cc[ch] = gc;
    dd[ch] = -gc * invstd[ch] * sum_dy_xhat / m;
    ee[ch] = -gc * sum_dy / m;
}

/* backward (composed.backward + composed.grad_coefficients): g = dy (0 where the ReLU output yr <= 0);
 * sums[0] = sum g, sums[1] = sum g*(x - mu) per channel (float64, one pass; skipped when given_sums), then
 * dx = c*g + d*(x - mu) + e in one pass. given_sums: (sum dy, sum dy*xhat) of a larger set of m values. */
int CAT(bn_backward_, SFX)(const T *dy, const T *x, const T *yr, int64_t n, int64_t c, int64_t s, int cl,
                      const T *mean_in, const T *var_in, const T *w, double eps, const double *given_sums,
                      double m_given, int reduce, T *dx, T *dw, T *db, int nt) {
    double *buf = (double *)calloc((size_t)(6 * c), sizeof(double));
    if (!buf) return -1;
    double *s1 = buf, *s2 = buf + c, *invstd = buf + 2 * c, *cc = buf + 3 * c, *dd = buf + 4 * c, *ee = buf + 5 * c;
    for (int64_t ch = 0; ch < c; ch++) invstd[ch] = 1.0 / sqrt((double)var_in[ch] + eps);
    /* (not where the dx pass streams rows that do not start on cache lines: those flat runs win there) */
    const int64_t fcb = reduce && !cl && dx && !given_sums && !(IS_F32 && nchw_flat_stream(n * c, s))
                            ? fused_channels(n, c, s, sizeof(T), yr != NULL, nt) : 0;
    if (fcb) {
        /* NCHW, fused: a block of fcb channels at a time, its sums, then its dx while its x and dy are still in
         * the L2 cache (the dx pass reads them from there, not from memory). The same sums (each channel's
         * rows in sample order), coefficients and dx arithmetic as the two passes below: the same bits. */
        const double m = (double)n * (double)s;
        const int64_t nb = (c + fcb - 1) / fcb;
        const int stream = IS_F32 && nchw_stream(dx, n * c, s);
        #pragma omp parallel num_threads(nt) if(nt > 1)
        {
            #pragma omp for schedule(static) nowait
            for (int64_t cb = 0; cb < nb; cb++) {
                const int64_t c0 = cb * fcb, c1 = c0 + fcb < c ? c0 + fcb : c;
                CAT(block_sums_, SFX)(dy, x, yr, n, c, s, c0, c1, mean_in, s1, s2);
                for (int64_t ch = c0; ch < c1; ch++)
                    CAT(dx_coefficients_, SFX)(ch, w, invstd, s1[ch], s2[ch] * invstd[ch], m, cc, dd, ee);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t ch = c0; ch < c1; ch++) {
                        const int64_t o = (i * c + ch) * s;
                        CAT(grad_row_, SFX)(dy + o, x + o, yr ? yr + o : NULL, dx + o, s, cc[ch], dd[ch], ee[ch],
                                          mean_in[ch], stream);
                    }
            }
            fence(stream);
        }
    } else if (reduce && !cl) {
        /* blocks of NCHW_CB channels read in memory order (as the statistics); each channel's sums are the
         * sums of its rows in sample order, whatever the blocks and threads */
        const int64_t nb = (c + NCHW_CB - 1) / NCHW_CB;
        #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
        for (int64_t cb = 0; cb < nb; cb++) {
            const int64_t c0 = cb * NCHW_CB, c1 = c0 + NCHW_CB < c ? c0 + NCHW_CB : c;
            CAT(block_sums_, SFX)(dy, x, yr, n, c, s, c0, c1, mean_in, s1, s2);
        }
    } else if (reduce) {
        const int64_t rows = n * s, nb = rows < BLOCKS ? rows : BLOCKS;
        double *part = (double *)calloc((size_t)(2 * nb * c + c), sizeof(double));
        if (!part) { free(buf); return -1; }
        double *mu = part + 2 * nb * c;
        for (int64_t ch = 0; ch < c; ch++) mu[ch] = (double)mean_in[ch];
        #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
        for (int64_t b = 0; b < nb; b++) {
#if IS_F32
            cl_bwd_sums_f32(x, dy, yr, rows * b / nb, rows * (b + 1) / nb, c, mean_in, part + 2 * b * c,
                            part + 2 * b * c + c);
#else
            CAT(cl_sums_, SFX)(x, dy, yr, rows * b / nb, rows * (b + 1) / nb, c, mu, part + 2 * b * c,
                               part + 2 * b * c + c);
#endif
        }
        for (int64_t ch = 0; ch < c; ch++) {
            double t1 = 0, t2 = 0;
            for (int64_t b = 0; b < nb; b++) { t1 += part[2 * b * c + ch]; t2 += part[2 * b * c + c + ch]; }
            s1[ch] = t1;
            s2[ch] = t2;
        }
        free(part);
    }
    for (int64_t ch = 0; ch < c; ch++) {
        if (db) db[ch] = (T)s1[ch];
        if (dw) dw[ch] = (T)(s2[ch] * invstd[ch]);
    }
    if (!dx || fcb) { free(buf); return 1; }  /* (fused: dx is written already) */
    const double m = given_sums ? m_given : (double)n * (double)s;
    for (int64_t ch = 0; ch < c; ch++)
        CAT(dx_coefficients_, SFX)(ch, w, invstd, given_sums ? given_sums[ch] : s1[ch],
                                   given_sums ? given_sums[c + ch] : s2[ch] * invstd[ch], m, cc, dd, ee);
    if (!cl) {
#if IS_F32
        if (nchw_flat_stream(n * c, s)) {
            float *co = (float *)malloc((size_t)(4 * c) * sizeof(float));
            if (co) {
                for (int64_t ch = 0; ch < c; ch++) {
                    co[ch] = (float)cc[ch]; co[c + ch] = (float)dd[ch]; co[2 * c + ch] = (float)ee[ch]; co[3 * c + ch] = mean_in[ch];
                }
                #pragma omp parallel num_threads(nt) if(nt > 1)
                {
                    THREAD_ROWS(n * c, r0, r1);
                    dx_flat_f32(dy, x, yr, dx, r0, r1, s, c, co, co + c, co + 2 * c, co + 3 * c);
                    fence(1);
                }
                free(co);
                free(buf);
                return 1;
            }
        }
        const int stream = nchw_stream(dx, n * c, s);
        #pragma omp parallel num_threads(nt) if(nt > 1)
        {
            #pragma omp for schedule(static) nowait
            for (int64_t r = 0; r < n * c; r++) {
                const int64_t ch = r % c;
                dx_row_f32(dy + r * s, x + r * s, yr ? yr + r * s : NULL, dx + r * s, s, (float)cc[ch],
                           (float)dd[ch], (float)ee[ch], mean_in[ch], stream);
            }
            fence(stream);
        }
#else
        #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
        for (int64_t r = 0; r < n * c; r++) {
            const int64_t ch = r % c;
            CAT(grad_row_, SFX)(dy + r * s, x + r * s, yr ? yr + r * s : NULL, dx + r * s, s, cc[ch], dd[ch], ee[ch],
                              mean_in[ch], 0);
        }
#endif
    } else {
        T *co = (T *)malloc((size_t)(4 * c) * sizeof(T));
        if (!co) { free(buf); return -1; }
        for (int64_t ch = 0; ch < c; ch++) {
            co[ch] = (T)cc[ch]; co[c + ch] = (T)dd[ch]; co[2 * c + ch] = (T)ee[ch]; co[3 * c + ch] = mean_in[ch];
        }
        const T *c1 = co, *d1 = co + c, *e1 = co + 2 * c, *mu = co + 3 * c;
#if IS_F32
        if (cl_stream(dx, c, (double)n * c * s * sizeof(T))) {
            #pragma omp parallel num_threads(nt) if(nt > 1)
            {
                #pragma omp for schedule(static) nowait
                for (int64_t r = 0; r < n * s; r++)
                    cl_dx_row_f32(dy + r * c, x + r * c, yr ? yr + r * c : NULL, dx + r * c, c, c1, d1, e1, mu);
                fence(1);
            }
            free(co);
            free(buf);
            return 1;
        }
#endif
        #pragma omp parallel for num_threads(nt) if(nt > 1) schedule(static)
        for (int64_t r = 0; r < n * s; r++) {
            const T *xr = x + r * c, *gr = dy + r * c, *yy = yr ? yr + r * c : NULL;
            T *o = dx + r * c;
            if (yy) {
                #pragma omp simd
                for (int64_t ch = 0; ch < c; ch++)
                    o[ch] = (yy[ch] > 0 ? gr[ch] : (T)0) * c1[ch] + (d1[ch] * (xr[ch] - mu[ch]) + e1[ch]);
            } else {
                #pragma omp simd
                for (int64_t ch = 0; ch < c; ch++) o[ch] = gr[ch] * c1[ch] + (d1[ch] * (xr[ch] - mu[ch]) + e1[ch]);
            }
        }
        free(co);
    }
    free(buf);
    return 1;
}

/* Alg. 2's running averages (bnlab.nn.functional.update_running_stats), in place, for buffers of T and batch
 * statistics of T: u = var*factor (the unbiased variance, factor = m'/(m' - 1) rounded to T, as torch's
 * tensor-by-scalar product), then running <- lerp(running, new, w) in T with torch's CPU formula (w < 0.5:
 * running + w*(new - running), else new + (w - 1)*(new - running), one fused multiply-add), so the bits are
 * those of the stock ops. Only when every mean and u is finite: returns 1 updated, 0 nothing changed (the
 * caller then takes the guarded path, which keeps the features whose statistics are not finite). */
int CAT(bn_running_, SFX)(T *rm, T *rv, const T *mean, const T *var, int64_t c, double momentum, double factor) {
    const T f = (T)factor, w = (T)momentum;
    for (int64_t ch = 0; ch < c; ch++)
        if (!isfinite(mean[ch]) || !isfinite(var[ch] * f)) return 0;
    const int small = (w < 0 ? -w : w) < (T)0.5;
    for (int64_t ch = 0; ch < c; ch++) {
        /* u rounded to T on its own (a volatile store: the compiler may not fuse the product into u - rv) */
        volatile T product = var[ch] * f;
        const T u = product, dm = mean[ch] - rm[ch], dv = u - rv[ch];
#if IS_F32
        rm[ch] = small ? fmaf(w, dm, rm[ch]) : fmaf(w - 1.0f, dm, mean[ch]);
        rv[ch] = small ? fmaf(w, dv, rv[ch]) : fmaf(w - 1.0f, dv, u);
#else
        rm[ch] = small ? fma(w, dm, rm[ch]) : fma(w - 1.0, dm, mean[ch]);
        rv[ch] = small ? fma(w, dv, rv[ch]) : fma(w - 1.0, dv, u);
#endif
    }
    return 1;
}
