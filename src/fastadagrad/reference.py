"""The NumPy backend: the same functions as the compiled kernels, the same operation order.

It is the fallback when the extension is not built and the oracle the tests hold the extension
to: every function here mirrors one in `fastadagrad.kernels`, argument for argument, and must
give identical bytes. Arithmetic is done in the arrays' dtype with NumPy ufuncs writing through
`out=`, so non-contiguous views are updated in place.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fastadagrad import _clipping
from fastadagrad import _stochastic
from fastadagrad._mixed_precision import is_low_precision
from fastadagrad._validation import (DenseOptions, check_dense, check_dense_clipnorm,
                                     check_sparse, check_sparse_rule, clip_scale)


def _float_step(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, o: DenseOptions) -> None:
    """The float32/float64 step: param, accum updated in place; every ufunc rounds once, in the arrays' dtype. Two or
    three scratch arrays are written through out= (no temporary per operation)."""
    dtype = param.dtype.newbyteorder("=")
    t = dtype.type
    clr, eps, wd, dwd = t(o.clr), t(o.eps), t(o.weight_decay), t(o.decoupled_weight_decay)
    work = np.empty(param.shape, dtype)
    g = grad
    if o.maximize or o.weight_decay != 0 or o.grad_scale != 1:
        g = np.empty(param.shape, dtype)
        src = grad
        if o.grad_scale != 1:                               # clipping: g = grad * (±scale)
            src = np.multiply(grad, t((-1.0 if o.maximize else 1.0) * o.grad_scale), out=g)
        elif o.maximize:
            src = np.negative(grad, out=g)                 # g = -grad
        if o.weight_decay != 0:
            np.multiply(wd, param, out=work)
            np.add(src, work, out=g)                        # g = g + wd * param
    if o.decoupled_weight_decay != 0:
        np.multiply(param, dwd, out=work)
        np.multiply(work, clr, out=work)
        np.subtract(param, work, out=param)                 # param = param - param * dwd * clr
    if o.update_slots:
        np.multiply(g, g, out=work)
        np.add(accum, work, out=accum)                      # accum = accum + g * g
    if o.eps_inside:
        np.add(accum, eps, out=work)
        np.sqrt(work, out=work)                             # denom = sqrt(accum + eps)
    else:
        np.sqrt(accum, out=work)
        np.add(work, eps, out=work)                         # denom = sqrt(accum) + eps
    update = g if g is not grad else np.empty(param.shape, dtype)
    np.multiply(clr, g, out=update)
    np.divide(update, work, out=update)                     # (clr * g) / denom
    if o.zero_if_accum_zero:
        np.copyto(update, t(0), where=accum == 0)           # optax: no update where accum == 0
    np.subtract(param, update, out=param)


# ----------------------------------------------------------------------------- mixed precision
def update_validated(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, o: DenseOptions,
                     master: np.ndarray | None = None) -> None:
    """The general step on arrays that passed _validation (any layout, in place): the twin of
    kernels.update_validated. float16/bfloat16 or `master`: update_mixed_validated. No
    floating-point warnings (IEEE results, as the compiled loops)."""
    with np.errstate(all="ignore"):
        if master is not None or is_low_precision(param):
            update_mixed_validated(param, grad, accum, o, master)
        elif param.size:
            _float_step(param, grad, accum, o)


def update_mixed_validated(param: np.ndarray, grad: np.ndarray, accum: np.ndarray,
                           o: DenseOptions, master: np.ndarray | None = None) -> None:
    """float16/bfloat16 storage (issue 15): every operand widened to float32 (exact), the
    float32 step above, each result rounded once to its storage dtype by NumPy's / ml_dtypes'
    cast (round to nearest even) and written into the caller's arrays in place. With
    `master` (float32) the step runs on `master` and `param` receives its rounded copy."""
    f32 = np.dtype(np.float32)
    p32 = np.array(master if master is not None else param, dtype=f32)   # a float32 copy
    g32 = np.asarray(grad, dtype=f32)                                   # read only
    a32 = accum if accum.dtype == f32 else np.array(accum, dtype=f32)
    _float_step(p32, g32, a32, o)   # the update uses the float32 accumulator, before rounding
    if a32 is not accum:
        accum[...] = a32
    if master is not None:
        master[...] = p32
    if o.sr_keys is None:
        param[...] = p32
    else:   # counters: the C-order index of each element
        _stochastic.store(param, p32, o.sr_keys, np.arange(param.size).reshape(param.shape))


def sparse_mixed_step(table: np.ndarray, accum: np.ndarray, idx: np.ndarray, grads: np.ndarray,
                      o: DenseOptions, sparse_f32: Callable[..., None] | None = None) -> None:
    """The sparse step on a float16/bfloat16 table (validated; grads of its dtype or float32): the
    touched rows gathered into float32 (exact), the float32 sparse step on them (duplicates
    summed in float32, `sparse_f32(table, accum, idx, grads, o)`, by default
    sparse_dup_validated),
    each result rounded once back into `table` and `accum`. Bytes do not depend on which
    float32 sparse step runs (they are identical)."""
    rows, local = np.unique(idx, return_inverse=True)
    f32 = np.dtype(np.float32)
    t32 = np.ascontiguousarray(table[rows], dtype=f32)
    a32 = np.ascontiguousarray(accum[rows], dtype=f32)
    g32 = np.ascontiguousarray(grads, dtype=f32)
    (sparse_f32 or sparse_dup_validated)(t32, a32, np.ascontiguousarray(local.reshape(-1), dtype=np.int64),
                                g32, o)
    accum[rows] = a32
    if o.sr_keys is None:
        table[rows] = t32
    else:   # counters: row * D + column, the element's C-order index in the table
        d = table.shape[1]
        counters = rows[:, None].astype(np.int64) * d + np.arange(d, dtype=np.int64)
        rounded = np.empty(t32.shape, table.dtype)
        _stochastic.store(rounded, t32, o.sr_keys, counters)
        table[rows] = rounded


def adagrad_update(param: np.ndarray, grad: np.ndarray, accum: np.ndarray, *, lr: float = 0.01,
                   eps: float = 1e-10, eps_placement: str = "outside", weight_decay: float = 0.0,
                   lr_decay: float = 0.0, step: int = 1, maximize: bool = False,
                   update_slots: bool = True, clipnorm: float | None = None,
                   master: np.ndarray | None = None, clipvalue: float | None = None,
                   stochastic_rounding: bool = False, seed: int = 0) -> None:
    """Apply one AdaGrad step to `param` and `accum` in place (PyTorch's operation order).

    Per element, in the arrays' dtype (float32 or float64; others raise TypeError)::

        g     = -grad if maximize else grad
        g     = g + weight_decay * param              (only when weight_decay != 0)
        clr   = lr / (1 + (step - 1) * lr_decay)      (once, in double, then cast to the dtype)
        accum = accum + g * g
        denom = sqrt(accum) + eps   (eps_placement="outside": PyTorch, TF ApplyAdagradV2)
              = sqrt(accum + eps)   (eps_placement="inside": Keras 3, optax, textbooks)
        param = param - (clr * g) / denom

    `param`, `grad`, `accum`: ndarrays of one shape and dtype, any number of dimensions,
    contiguous or not (views are updated in place), not overlapping in memory; `grad` may be
    read-only. lr, eps, weight_decay, lr_decay: finite and >= 0; step: int >= 1.
    update_slots=False (TF's ApplyAdagrad attribute): the step uses `accum` as it is and does
    not add g*g to it. clipnorm (Keras' `clipnorm`): the grad is scaled by
    clipnorm / max(||grad||, clipnorm) inside the step (no copy); ||grad|| summed in double in
    a fixed order (reference_family.sum_of_squares). clipvalue (Keras' `clipvalue`, torch's
    `clip_grad_value_`): every grad element clipped to [-clipvalue, clipvalue] first (NaN
    kept); exclusive with clipnorm.
    Every argument is checked before anything is written: a bad one raises TypeError or
    ValueError naming it and leaves all arrays untouched. NaN/inf in `grad` propagate as the
    formula says. Returns None.

    Mixed precision: `param` float16 or bfloat16 (ml_dtypes.bfloat16), `grad` of the param's
    dtype or float32, `accum` float32 or the param's dtype: every element is widened to
    float32, the formula runs in float32 and each result is rounded once to its storage dtype
    (round to nearest even). `master` (float32, param's shape, optional): float32 master
    weights; the step reads and updates `master`, and `param` receives its rounded copy.
    stochastic_rounding=True (float16/bfloat16 param): the param's store rounds up or down at
    random, unbiased, with bits from a counter hash of (seed, step, element index):
    reproducible and the same in both backends (fastadagrad._stochastic).
    """
    o = check_dense(param, grad, accum, lr, eps, eps_placement, weight_decay, lr_decay, step,
                    maximize, master, update_slots=update_slots,
                    stochastic_rounding=stochastic_rounding, seed=seed)
    clip = check_dense_clipnorm(clipnorm, param, grad, master)
    cv = _clipping.check_dense_clipvalue(clipvalue, clip, param, grad, master)
    if clip is not None:
        from fastadagrad.reference_family import sum_of_squares
        o = o._replace(grad_scale=clip_scale(sum_of_squares(grad), clip))
    if cv > 0 and param.size:
        grad = _clipping.clip_values(grad, cv)   # the twin may copy; the loops clip in place
    if param.size:
        update_validated(param, grad, accum, o, master)   # IEEE results, no warnings


def update_clip_validated(param: np.ndarray, grad: np.ndarray, accum: np.ndarray,
                          o: DenseOptions, clip: float) -> None:
    """update_validated with every grad element clipped to [-clip, clip] first (the twin of
    kernels.update_clip_validated; the twin clips a copy, the loops clip in registers)."""
    update_validated(param, _clipping.clip_values(grad, clip), accum, o)


def bandwidth_probe(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
    """The memory probe's arithmetic: z += y; x -= z (3 reads, 2 writes, no sqrt/div)."""
    np.add(z, y, out=z)
    np.subtract(x, z, out=x)


def apply_steps(steps: list[tuple[Any, Any, list[Any], DenseOptions, float, list[Any]]]) -> None:
    """The twin of kernels.apply_steps, argument for argument: for each group `(counter, group,
    grads, opts, clr, items)` one call per item `(param, grad, accum, idx, duplicates[,
    master])` (`idx` None: dense, else the sparse step with `grad` the values; `master`: the
    float32 master weights of a float16/bfloat16 param), then `counter.step += 1`. The
    compiled module's pointer group (the second field) plays no part here. An item whose
    `param` is a list is a batch of one dtype combination (update_multi_validated)."""
    for counter, _group, _grads, opts, _clr, items in steps:
        for item in items:
            p, g, a, idx, dup = item[:5]
            if type(p) is list:
                update_multi_validated(p, g, a, item[5], opts)
            elif idx is None:
                update_validated(p, g, a, opts, item[5] if len(item) > 5 else None)
            else:
                sparse_dup_validated(p, a, idx, g, opts, dup)
        counter.step += 1


def update_multi_validated(params: list[np.ndarray], grads: list[np.ndarray],
                           accums: list[np.ndarray], masters: list[np.ndarray | None],
                           opts: DenseOptions) -> None:
    """The twin of kernels.update_multi_validated (validated arrays of one dtype combination,
    stepped in one compiled call there): the same step, array by array (elementwise: the same
    operations on every element, so the same bytes)."""
    for p, g, a, m in zip(params, grads, accums, masters):
        update_validated(p, g, a, opts, m)


ROWWISE_LANES = 8


def rowwise_mean_square(g: np.ndarray) -> np.ndarray:
    """Mean over each row of g*g with the compiled kernel's fixed order: 8 lanes, lane k sums
    columns k, k+8, k+16, ... left to right, then ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), / d."""
    b, d = g.shape
    sq = np.multiply(g, g)
    pad = (-d) % ROWWISE_LANES
    if pad:
        sq = np.concatenate([sq, np.zeros((b, pad), dtype=g.dtype)], axis=1)  # + 0 is exact
    lanes = np.cumsum(sq.reshape(b, -1, ROWWISE_LANES), axis=1)[:, -1, :]  # sequential sums
    l = [lanes[:, k] for k in range(ROWWISE_LANES)]
    total = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    return np.asarray(np.divide(total, g.dtype.type(d)))


def merge_duplicates(idx: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique rows, merged grads): the rows of duplicate indices summed in order of
    appearance, starting from the first occurrence (g1 + g2 + ...)."""
    rows, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
    merged = grads[first].copy()
    rest = np.ones(idx.size, dtype=bool)
    rest[first] = False
    np.add.at(merged, inverse[rest], grads[rest])   # unbuffered, in order of appearance
    return rows, merged


def sparse_adagrad_update(table: np.ndarray, accum: np.ndarray, indices: np.ndarray,
                          grads: np.ndarray, *, lr: float = 0.01, eps: float = 1e-10,
                          eps_placement: str = "outside", maximize: bool = False,
                          weight_decay: float = 0.0, duplicates: str = "sum",
                          update_slots: bool = True, clipnorm: float | None = None,
                          clipvalue: float | None = None, stochastic_rounding: bool = False,
                          seed: int = 0, step: int = 1) -> None:
    """AdaGrad on the rows of `table` named by `indices`, in place; duplicates summed first.

    table (N, D) float32/float64, C-contiguous; indices (B,) int32/int64, each 0 <= i < N
    (checked before anything is written; negatives are rejected, not wrapped); grads (B, D).
    accum (N, D): element-wise AdaGrad on each touched row r with its merged gradient g:
        g = -g (maximize); g = g + weight_decay * table[r]; accum[r] += g*g;
        table[r] -= (lr * g) / (sqrt(accum[r]) + eps)        [or sqrt(accum[r] + eps)]
    accum (N,): row-wise AdaGrad (FBGEMM/TorchRec): accum[r] += mean(g*g) over the row (fixed
        summation order, see rowwise_mean_square); table[r] -= (lr * g) / (sqrt(accum[r]) + eps).
    Weight decay (coupled) touches only the rows in the batch, once per unique row (per
    occurrence with duplicates="sequential"). An empty batch is a no-op.
    duplicates: "sum" (torch: the rows of duplicate indices summed in order of appearance,
    then one step), "sequential" (TF's raw ops, FBGEMM: one step per occurrence, in batch
    order) or "keras" (Keras 3, element-wise: every occurrence's g*g added to the accumulator
    in order, then every occurrence's update, computed with the final accumulator).
    update_slots=False: the step reads the accumulator and does not add to it (TF).
    clipnorm: the grads scaled by clipnorm / max(norm, clipnorm), the norm over the rows of
    `grads` as passed (every occurrence: Keras' IndexedSlices), the scale folded into the step
    (after the duplicates rule). clipvalue (element-wise accum): every occurrence's grad
    clipped to [-clipvalue, clipvalue] before the duplicates rule ("sum" adds the clipped
    occurrences). Exclusive, as in Keras.
    stochastic_rounding=True (float16/bfloat16 table): the table's store rounds at random,
    unbiased, keyed by (seed, step, row * D + column) (fastadagrad._stochastic); `step` is
    used for that key only.
    """
    o, idx, g = check_sparse(table, accum, indices, grads, lr, eps, eps_placement, maximize,
                             weight_decay)
    o = check_sparse_rule(o, table, accum, duplicates, update_slots, stochastic_rounding, seed,
                          step)
    cn, cv = _clipping.check_sparse_clips(clipnorm, clipvalue, table, accum)
    if cn is not None:
        from fastadagrad.reference_family import sum_of_squares
        o = o._replace(grad_scale=clip_scale(sum_of_squares(g), cn))
    if idx.size == 0 or table.shape[1] == 0:
        return
    sparse_dup_validated(table, accum, idx, g, o, duplicates, cv)   # IEEE results, no warnings


def occurrence_ranks(idx: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same index (0 for a first
    occurrence): the positions of rank k name distinct rows, in batch order."""
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    run_start = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    starts = np.repeat(run_start, np.diff(np.r_[run_start, idx.size]))
    ranks = np.empty(idx.size, dtype=np.int64)
    ranks[order] = np.arange(idx.size) - starts
    return ranks


def sparse_dup_validated(table: np.ndarray, accum: np.ndarray, idx: np.ndarray,
                         grads: np.ndarray, o: DenseOptions, duplicates: str = "sum",
                         clip: float = 0.0) -> None:
    """The sparse step on validated arguments, with the duplicates rule (the twin of
    kernels.sparse_dup_validated). Occurrences of one
    row are applied in batch order; rows are independent, so the k-th occurrences of all rows
    form one gather-update-scatter pass (k = 0, 1, ...). A float16/bfloat16 table (duplicates
    "sum" only, checked by check_sparse_rule) goes through its float32 rows. No
    floating-point warnings."""
    if idx.size == 0 or table.shape[1] == 0:
        return
    if clip > 0:   # every occurrence clipped to [-clip, clip] first (the loops clip in place)
        grads = _clipping.clip_values(grads, clip)
    with np.errstate(all="ignore"):
        _sparse_dup(table, accum, idx, grads, o, duplicates)


def _sparse_dup(table: np.ndarray, accum: np.ndarray, idx: np.ndarray, grads: np.ndarray,
                o: DenseOptions, duplicates: str) -> None:
    if is_low_precision(table):
        sparse_mixed_step(table, accum, idx, grads, o)
        return
    if duplicates == "sum":
        rows, merged = merge_duplicates(idx, grads)
        _rows_step(table, accum, rows, merged, o)
        return
    ranks = occurrence_ranks(idx)
    passes = [np.flatnonzero(ranks == k) for k in range(int(ranks.max()) + 1)]
    if duplicates == "sequential" or not o.update_slots:
        for pos in passes:
            _rows_step(table, accum, idx[pos], grads[pos], o)
        return
    sign = table.dtype.type((-1.0 if o.maximize else 1.0) * o.grad_scale)
    for pos in passes:                                  # keras: every g*g first ...
        rows, g = idx[pos], grads[pos]
        if o.grad_scale != 1:                           # clipnorm's scale (the loop's sign)
            g = np.multiply(g, sign)
        accum[rows] = np.add(accum[rows], np.multiply(g, g))
    apply_only = o._replace(update_slots=False)
    for pos in passes:                                  # ... then every update
        _rows_step(table, accum, idx[pos], grads[pos], apply_only)


def _rows_step(table: np.ndarray, accum: np.ndarray, rows: np.ndarray, merged: np.ndarray,
               o: DenseOptions) -> None:
    """One step on distinct rows (gathered, updated, scattered back)."""
    t = table.dtype.type
    p = table[rows]
    if accum.ndim == 2:
        a = accum[rows]
        _float_step(p, merged, a, o)
        accum[rows] = a
    else:
        if o.grad_scale != 1:
            g = np.multiply(merged, t((-1.0 if o.maximize else 1.0) * o.grad_scale))
        else:
            g = np.multiply(merged, t(-1)) if o.maximize else merged
        if o.weight_decay != 0:
            g = np.add(g, np.multiply(t(o.weight_decay), p))
        a = accum[rows]
        if o.update_slots:
            a = np.add(a, rowwise_mean_square(g))
            accum[rows] = a
        if o.eps_inside:
            denom = np.sqrt(np.add(a, t(o.eps)))
        else:
            denom = np.add(np.sqrt(a), t(o.eps))
        np.subtract(p, np.divide(np.multiply(t(o.clr), g), denom[:, None]), out=p)
    table[rows] = p
