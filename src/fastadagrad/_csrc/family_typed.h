/* The AdaGrad family's loops for one floating type (issue 14), included by loops_typed.h after
 * its element step (same macros: FA_T, FA_SQRT, FA_TFN, FA_ALWAYS_INLINE, select, coef_t).
 * Every loop is one fused pass; the rule's switches are compile-time constants of the loop
 * copies, so no branch is left inside a loop. Bit-identical to reference_family.py.
 */

/* ---------------------------------------------------------------- TF update_slots=False
 * The plain AdaGrad element without the accumulation: denom from the accumulator as it is. */
static FA_ALWAYS_INLINE FA_T FA_TFN(apply_element)(FA_T p, FA_T g, FA_T acc,
                                                    const FA_TFN(coef_t) *c, int decay,
                                                    int decoupled, int zero_mask)
{
    FA_T upd;
    g = g * c->sign;
    if (decay)
        g = g + c->wd * p;
    if (decoupled)
        p = p - p * c->dwd * c->clr;
    upd = p - (c->clr * g) / (FA_SQRT(acc + c->eps_in) + c->eps_out);
    if (zero_mask)
        upd = FA_TFN(select)(acc == 0, p, upd);
    return upd;
}

static FA_ALWAYS_INLINE void FA_TFN(apply_loop)(fa_ssize_t n, FA_T *param, const FA_T *grad,
                                                const FA_T *accum, const FA_TFN(coef_t) *c0,
                                                int decay, int decoupled, int zero_mask)
{
    const FA_TFN(coef_t) c = *c0;
    fa_ssize_t i;
    for (i = 0; i < n; i++)
        param[i] = FA_TFN(apply_element)(param[i], grad[i], accum[i], &c, decay, decoupled,
                                         zero_mask);
}

static void FA_TFN(apply_dense)(fa_ssize_t n, FA_T *param, const FA_T *grad, const FA_T *accum,
                                const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    int variant = ((o->weight_decay != 0) << 2) | ((o->decoupled_weight_decay != 0) << 1)
                  | (o->zero_if_accum_zero != 0);
    switch (variant) {
    case 0: FA_TFN(apply_loop)(n, param, grad, accum, &c, 0, 0, 0); break;
    case 1: FA_TFN(apply_loop)(n, param, grad, accum, &c, 0, 0, 1); break;
    case 2: FA_TFN(apply_loop)(n, param, grad, accum, &c, 0, 1, 0); break;
    case 3: FA_TFN(apply_loop)(n, param, grad, accum, &c, 0, 1, 1); break;
    case 4: FA_TFN(apply_loop)(n, param, grad, accum, &c, 1, 0, 0); break;
    case 5: FA_TFN(apply_loop)(n, param, grad, accum, &c, 1, 0, 1); break;
    case 6: FA_TFN(apply_loop)(n, param, grad, accum, &c, 1, 1, 0); break;
    default: FA_TFN(apply_loop)(n, param, grad, accum, &c, 1, 1, 1); break;
    }
}

static void FA_TFN(apply_strided)(fa_ssize_t n, FA_T *param, fa_ssize_t sp, const FA_T *grad,
                                  fa_ssize_t sg, const FA_T *accum, fa_ssize_t sa,
                                  const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    int decay = o->weight_decay != 0, decoupled = o->decoupled_weight_decay != 0;
    int zero_mask = o->zero_if_accum_zero != 0;
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        FA_T *p = (FA_T *)((char *)param + i * sp);
        *p = FA_TFN(apply_element)(*p, *(const FA_T *)((const char *)grad + i * sg),
                                   *(const FA_T *)((const char *)accum + i * sa), &c, decay,
                                   decoupled, zero_mask);
    }
}

/* Row-wise without accumulating: row -= (clr * g) / denom(accum of the row). */
static void FA_TFN(apply_rowwise)(fa_ssize_t d, FA_T *row, const FA_T *grad, const FA_T *accum,
                                  const DenseOpts *o)
{
    FA_TFN(coef_t) c = FA_TFN(coefficients)(o);
    FA_T t, denom = FA_SQRT(*accum + c.eps_in) + c.eps_out;
    fa_ssize_t j;
    for (j = 0; j < d; j++) {
        t = grad[j] * c.sign;
        if (o->weight_decay != 0)
            t = t + c.wd * row[j];
        row[j] = row[j] - (c.clr * t) / denom;
    }
}

/* Keras 3 sparse duplicates (keras_rows): clip_typed.h, with the clipped variant. */

/* ---------------------------------------------------------------- the family rules */
typedef struct {
    FA_T lr, nlr, l1, l2, one, zero, da_l2tlr, da_tl1, scale, clo, chi;
} FA_TFN(fam_coef_t);

static inline FA_TFN(fam_coef_t) FA_TFN(fam_coefficients)(const FamilyOpts *o)
{
    FA_TFN(fam_coef_t) c;
    FA_T t = (FA_T)o->step;
    c.lr = (FA_T)o->lr;
    c.nlr = c.lr * (FA_T)-1.0;
    c.l1 = (FA_T)o->l1;
    c.l2 = (FA_T)o->l2;
    c.one = (FA_T)1.0;
    c.zero = (FA_T)0.0;
    c.da_l2tlr = c.l2 * (t * c.lr);   /* TF: l2 * (T(global_step) * lr), in the dtype */
    c.da_tl1 = t * c.l1;              /* TF: T(global_step) * l1 */
    c.scale = (FA_T)o->grad_scale;    /* clipnorm: g = grad * scale (1: exact, no change) */
    c.chi = (FA_T)o->clipvalue;       /* clipvalue: g = min(max(g, -v), v) when v > 0 */
    c.clo = -c.chi;
    return c;
}

/* sign(x) as TF's Eigen computes it for reals: (x > 0) - (x < 0), 0 for NaN. */
static FA_ALWAYS_INLINE FA_T FA_TFN(sign)(FA_T x)
{
    return (FA_T)((x > 0) - (x < 0));
}

/* |x|: the sign bit cleared (fabs, without a round trip through double for float). */
static FA_ALWAYS_INLINE FA_T FA_TFN(abs)(FA_T x)
{
    FA_U u;
    memcpy(&u, &x, sizeof u);
    u &= ~((FA_U)1 << (sizeof(FA_U) * 8 - 1));
    memcpy(&x, &u, sizeof x);
    return x;
}

/* max(x, 0) that keeps NaN (NaN < 0 is false). */
static FA_ALWAYS_INLINE FA_T FA_TFN(pos)(FA_T x, FA_T zero)
{
    return FA_TFN(select)(x < 0, zero, x);
}

/* Proximal AdaGrad (FOBOS; TF ApplyProximalAdagrad with a = lr / sqrt(accum)):
 *   accum += g*g; a = lr / sqrt(accum); prox = p - g*a;
 *   l1 > 0: p = (sign(prox) * max(|prox| - a*l1, 0)) / (1 + l2*a);  else p = prox / (1 + l2*a) */
static FA_ALWAYS_INLINE FA_T FA_TFN(proximal_element)(FA_T p, FA_T g, FA_T *s1,
                                                       const FA_TFN(fam_coef_t) *c, int l1)
{
    FA_T acc = *s1 + g * g, a, prox, den;
    *s1 = acc;
    a = c->lr / FA_SQRT(acc);
    prox = p - g * a;
    den = c->one + c->l2 * a;
    if (l1)
        return (FA_TFN(sign)(prox) * FA_TFN(pos)(FA_TFN(abs)(prox) - a * c->l1, c->zero)) / den;
    return prox / den;
}

/* AdaGrad dual averaging (TF ApplyAdagradDA; t the global step):
 *   gacc += g; gg += g*g; den = l2*(t*lr) + sqrt(gg);
 *   l1 > 0: p = ((-lr * sign(gacc)) * max(|gacc| - t*l1, 0)) / den;  else p = (-lr * gacc) / den */
static FA_ALWAYS_INLINE FA_T FA_TFN(da_element)(FA_T g, FA_T *s1, FA_T *s2,
                                                 const FA_TFN(fam_coef_t) *c, int l1)
{
    FA_T gacc = *s1 + g, gg = *s2 + g * g, den;
    *s1 = gacc;
    *s2 = gg;
    den = c->da_l2tlr + FA_SQRT(gg);
    if (l1)
        return ((c->nlr * FA_TFN(sign)(gacc)) * FA_TFN(pos)(FA_TFN(abs)(gacc) - c->da_tl1, c->zero))
               / den;
    return (c->nlr * gacc) / den;
}

/* GloVe / LightFM: p -= (lr * g) / sqrt(accum); then accum += g*g (accum starts at 1, no eps). */
static FA_ALWAYS_INLINE FA_T FA_TFN(lagged_element)(FA_T p, FA_T g, FA_T *s1,
                                                     const FA_TFN(fam_coef_t) *c)
{
    FA_T acc = *s1, upd = p - (c->lr * g) / FA_SQRT(acc);
    *s1 = acc + g * g;
    return upd;
}

/* The gradient a family rule sees (the switch `clip` a constant of the loop copy):
   0 grad as is; 1 grad * scale (clipnorm); 2 grad clipped to [clo, chi] (clipvalue). */
static FA_ALWAYS_INLINE FA_T FA_TFN(clipg)(FA_T g, FA_T lo, FA_T hi)
{
    g = FA_TFN(select)(g > hi, hi, g);
    return FA_TFN(select)(g < lo, lo, g);
}

static FA_ALWAYS_INLINE FA_T FA_TFN(fam_grad)(FA_T g, const FA_TFN(fam_coef_t) *c, int clip)
{
    if (clip == 1)
        return g * c->scale;
    if (clip == 2)
        return FA_TFN(clipg)(g, c->clo, c->chi);
    return g;
}

static inline int FA_TFN(fam_clip_mode)(const FamilyOpts *o)
{
    return o->clipvalue > 0 ? 2 : (o->grad_scale != 1.0 ? 1 : 0);
}

/* One rule over n contiguous elements, the switches as constants (inlined per call site). */
static FA_ALWAYS_INLINE void FA_TFN(family_loop)(fa_ssize_t n, FA_T *param, const FA_T *grad,
                                                 FA_T *s1, FA_T *s2,
                                                 const FA_TFN(fam_coef_t) *c0, int rule, int l1,
                                                 int clip)
{
    const FA_TFN(fam_coef_t) c = *c0;
    fa_ssize_t i;
    if (rule == FA_RULE_PROXIMAL) {
        for (i = 0; i < n; i++)
            param[i] = FA_TFN(proximal_element)(param[i], FA_TFN(fam_grad)(grad[i], &c, clip),
                                                &s1[i], &c, l1);
    } else if (rule == FA_RULE_DA) {
        for (i = 0; i < n; i++)
            param[i] = FA_TFN(da_element)(FA_TFN(fam_grad)(grad[i], &c, clip), &s1[i], &s2[i],
                                          &c, l1);
    } else {
        for (i = 0; i < n; i++)
            param[i] = FA_TFN(lagged_element)(param[i], FA_TFN(fam_grad)(grad[i], &c, clip),
                                              &s1[i], &c);
    }
}

/* The rule, l1 and clip switches of the caller's `o`, `l1` and `clip` as compile-time
 * constants: CALL(rule, l1, clip) is one loop copy per combination, picked at run time. Shared
 * by family_dense and family_rows (undefined after both). */
#define FA_FAM_CLIPS(CALL, rule, l1)                                                           \
    switch (clip) {                                                                            \
    case 0: CALL(rule, l1, 0); break;                                                          \
    case 1: CALL(rule, l1, 1); break;                                                          \
    default: CALL(rule, l1, 2); break;                                                         \
    }
#define FA_FAM_L1S(CALL, rule)                                                                 \
    if (l1) {                                                                                  \
        FA_FAM_CLIPS(CALL, rule, 1)                                                            \
    } else {                                                                                   \
        FA_FAM_CLIPS(CALL, rule, 0)                                                            \
    }
#define FA_FAM_DISPATCH(CALL)                                                                  \
    switch (o->rule) {                                                                         \
    case FA_RULE_PROXIMAL: FA_FAM_L1S(CALL, FA_RULE_PROXIMAL) break;                           \
    case FA_RULE_DA: FA_FAM_L1S(CALL, FA_RULE_DA) break;                                       \
    default: FA_FAM_CLIPS(CALL, FA_RULE_LAGGED, 0) break;                                      \
    }

#define FA_FAM_DENSE(rule, l1, clip) \
    FA_TFN(family_loop)(n, param, grad, s1, s2, &c, rule, l1, clip)

static void FA_TFN(family_dense)(fa_ssize_t n, FA_T *param, const FA_T *grad, FA_T *s1,
                                 FA_T *s2, const FamilyOpts *o)
{
    FA_TFN(fam_coef_t) c = FA_TFN(fam_coefficients)(o);
    int l1 = o->l1 > 0, clip = FA_TFN(fam_clip_mode)(o);
    FA_FAM_DISPATCH(FA_FAM_DENSE)
}
#undef FA_FAM_DENSE

/* The same over byte-strided operands (views updated in place); s2 unused unless DA. */
static void FA_TFN(family_strided)(fa_ssize_t n, FA_T *param, fa_ssize_t sp, const FA_T *grad,
                                   fa_ssize_t sg, FA_T *s1, fa_ssize_t ss1, FA_T *s2,
                                   fa_ssize_t ss2, const FamilyOpts *o)
{
    FA_TFN(fam_coef_t) c = FA_TFN(fam_coefficients)(o);
    int l1 = o->l1 > 0, clip = FA_TFN(fam_clip_mode)(o);
    fa_ssize_t i;
    for (i = 0; i < n; i++) {
        FA_T *p = (FA_T *)((char *)param + i * sp);
        FA_T g = FA_TFN(fam_grad)(*(const FA_T *)((const char *)grad + i * sg), &c, clip);
        FA_T *a = (FA_T *)((char *)s1 + i * ss1);
        if (o->rule == FA_RULE_PROXIMAL)
            *p = FA_TFN(proximal_element)(*p, g, a, &c, l1);
        else if (o->rule == FA_RULE_DA)
            *p = FA_TFN(da_element)(g, a, (FA_T *)((char *)s2 + i * ss2), &c, l1);
        else
            *p = FA_TFN(lagged_element)(*p, g, a, &c);
    }
}

/* Table rows rows[0..count), each occurrence in order (rows may repeat), with the rule, l1
 * and clip switches as constants, the coefficients decoded once for the whole run of rows,
 * prefetching `ahead` rows ahead. The element loop of a row carries FA_IVDEP: in a validated
 * call the table, state and gradient rows are pairwise disjoint (merged or clipped gradients
 * live in private scratch), so gcc needs no per-row overlap check (the same bytes:
 * element-wise IEEE operations in the same order). */
static FA_ALWAYS_INLINE void FA_TFN(family_rows_loop)(fa_ssize_t count, const int64_t *rows,
                                                      const FA_T **src, const FA_T *grads,
                                                      FA_T *table, FA_T *s1, FA_T *s2,
                                                      fa_ssize_t d, fa_ssize_t ahead,
                                                      const FA_TFN(fam_coef_t) *c0, int rule,
                                                      int l1, int clip)
{
    const FA_TFN(fam_coef_t) c = *c0;
    const fa_ssize_t nbytes = d * (fa_ssize_t)sizeof(FA_T);
    const int t_last = fa_rows_straddle(table, nbytes), s1_last = fa_rows_straddle(s1, nbytes);
    const int s2_last = rule == FA_RULE_DA && fa_rows_straddle(s2, nbytes);
    fa_ssize_t u, i;
    for (u = 0; u < count; u++) {
        const int64_t r = rows[u];
        FA_T *p = table + r * d, *a = s1 + r * d;
        const FA_T *g = FA_GRAD_ROW(src, grads, u, d);
        if (ahead > 0 && u + ahead < count) {
            fa_prefetch_row(table + rows[u + ahead] * d, nbytes, t_last);
            fa_prefetch_row(s1 + rows[u + ahead] * d, nbytes, s1_last);
            if (rule == FA_RULE_DA)
                fa_prefetch_row(s2 + rows[u + ahead] * d, nbytes, s2_last);
        }
        if (rule == FA_RULE_PROXIMAL) {
            FA_IVDEP
            for (i = 0; i < d; i++)
                p[i] = FA_TFN(proximal_element)(p[i], FA_TFN(fam_grad)(g[i], &c, clip), &a[i],
                                                &c, l1);
        } else if (rule == FA_RULE_DA) {
            FA_T *b = s2 + r * d;
            FA_IVDEP
            for (i = 0; i < d; i++)
                p[i] = FA_TFN(da_element)(FA_TFN(fam_grad)(g[i], &c, clip), &a[i], &b[i], &c,
                                          l1);
        } else {
            FA_IVDEP
            for (i = 0; i < d; i++)
                p[i] = FA_TFN(lagged_element)(p[i], FA_TFN(fam_grad)(g[i], &c, clip), &a[i],
                                              &c);
        }
    }
}

#define FA_FAM_ROWS(rule, l1, clip) \
    FA_TFN(family_rows_loop)(count, rows, src, grads, table, s1, s2, d, ahead, &c, rule, l1, clip)

static void FA_TFN(family_rows)(fa_ssize_t count, const int64_t *rows, const FA_T **src,
                                const FA_T *grads, FA_T *table, FA_T *s1, FA_T *s2,
                                fa_ssize_t d, fa_ssize_t ahead, const FamilyOpts *o)
{
    FA_TFN(fam_coef_t) c = FA_TFN(fam_coefficients)(o);
    int l1 = o->l1 > 0, clip = FA_TFN(fam_clip_mode)(o);
    FA_FAM_DISPATCH(FA_FAM_ROWS)
}
#undef FA_FAM_ROWS
#undef FA_FAM_DISPATCH
#undef FA_FAM_L1S
#undef FA_FAM_CLIPS

/* ---------------------------------------------------------------- clipping by norm */
static double FA_TFN(sumsq)(fa_ssize_t n, const FA_T *x)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t;
    fa_ssize_t j, k, n8 = n - n % 8;
    for (j = 0; j < n8; j += 8)
        for (k = 0; k < 8; k++) {
            t = (double)x[j + k];
            lane[k] = lane[k] + t * t;
        }
    for (j = n8; j < n; j++) {
        t = (double)x[j];
        lane[j - n8] = lane[j - n8] + t * t;
    }
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}
