"""The one registry of kernels: each compiled function, its NumPy twin, and how to make inputs.

Tests (equivalence over dtypes, sizes, layouts, options) iterate over KERNELS, so a new kernel is
tested by adding one entry here. The benchmark workloads and cases are in bench_workloads.py and
bench_cases.py (they use `sparse_batches` from here).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from fastadagrad import family as _family
from fastadagrad import reference
from fastadagrad._backend import _kernels
from fastadagrad._rules import RULES

DTYPES = (np.float32, np.float64)

#: Elements per vector of the compiled loops (AVX2: 8 floats; AVX-512: 16 floats, which is also
#: the chunk alignment of a parallel split, `_CHUNK_ALIGN` in kernels.pyx).
SIMD_WIDTHS = (8, 16)
#: The compiled backend's thread split (None without the extension: the NumPy twin has none).
PARALLEL_MIN_ELEMENTS: int | None = (_kernels.PARALLEL_MIN_ELEMENTS if _kernels is not None
                                     else None)


def thread_split_sizes() -> tuple[int, ...]:
    """Sizes just below, at and above the thread split, and a two-chunk size that is not a
    multiple of the chunk alignment; empty without the compiled extension."""
    p = PARALLEL_MIN_ELEMENTS
    return () if p is None else (p - 1, p, p + 1, p + 17, 2 * p + 31)


#: Sizes that straddle the SIMD widths and the thread split (PARALLEL_MIN_ELEMENTS, chunks
#: rounded to 16 elements).
SIZES = tuple(sorted({0, 1, 1000, 100_003, 2 * SIMD_WIDTHS[-1] - 1, 2 * SIMD_WIDTHS[-1] + 1}
                     | {w + d for w in SIMD_WIDTHS for d in (-1, 0, 1)}
                     | set(thread_split_sizes())))

def _dense_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
    return {
        "param": rng.standard_normal(shape, dtype=dtype),
        "grad": rng.standard_normal(shape, dtype=dtype),
        "accum": np.abs(rng.standard_normal(shape, dtype=dtype)),
    }


def _dense_options(clip: bool = True) -> list[dict[str, Any]]:
    """Every combination of the options that change the arithmetic (and clipping, unless
    `clip` is False: mixed precision does not clip)."""
    out = []
    for maximize, wd, placement, (lr_decay, step) in itertools.product(
            (False, True), (0.0, 0.05), ("outside", "inside"), ((0.0, 1), (0.1, 7))):
        out.append(dict(lr=0.1, eps=1e-6, maximize=maximize, weight_decay=wd,
                        eps_placement=placement, lr_decay=lr_decay, step=step))
    if not clip:
        return out
    # clipping (issue 14): by value (in the loop) and by norm (a reduction pass first)
    out += [dict(out[k], clipvalue=0.5) for k in (0, 5, 14)]
    out += [dict(out[0], clipvalue=0.5, update_slots=False), dict(out[5], clipnorm=1.0)]
    return out


def sparse_batches(rng: np.random.Generator, n_rows: int, batch: int, count: int,
                   dup_fraction: float = 0.25) -> list[np.ndarray]:
    """`count` random int64 batches of `batch` row indices, `dup_fraction` of them repeats of
    other indices of the same batch (so about 75% unique rows)."""
    out = []
    for _ in range(count):
        idx = rng.integers(0, n_rows, batch)
        dups = rng.choice(batch, int(batch * dup_fraction), replace=False)
        idx[dups] = idx[rng.integers(0, batch, dups.size)]
        out.append(idx)
    return out


def _sparse_inputs(rowwise: bool) -> Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]:
    """A batch of shape[0] indices into a table of 2 * batch + 3 rows of 13 features (13: not
    a multiple of the 8 row-wise lanes), a quarter of them repeats, in a random order."""
    def make(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
        b = int(np.prod(shape))
        n, d = 2 * b + 3, 13
        idx = sparse_batches(rng, n, b, 1)[0] if b else np.zeros(0, np.int64)
        return {
            "table": rng.standard_normal((n, d), dtype=dtype),
            "accum": np.abs(rng.standard_normal((n,) if rowwise else (n, d))).astype(dtype),
            "indices": idx,
            "grads": rng.standard_normal((b, d), dtype=dtype),
        }
    return make


def _sparse_options(rowwise: bool = False, extras: bool = True) -> list[dict[str, Any]]:
    """The options that change the arithmetic; `extras`: also clipping, the duplicate rules
    and update_slots=False (float32/float64 tables only)."""
    out = [dict(lr=0.1, eps=1e-6, maximize=m, weight_decay=wd, eps_placement=pl)
           for m, wd, pl in itertools.product((False, True), (0.0, 0.05), ("outside", "inside"))]
    if not extras:
        return out
    # clipping (issue 14): the norm of the rows as passed; by value element-wise only
    out += [dict(out[k], clipnorm=1.0) for k in (0, 7)]
    out += [dict(out[0], duplicates="sequential"), dict(out[7], duplicates="sequential"),
            dict(out[3], update_slots=False)]
    if not rowwise:
        out += [dict(out[k], duplicates="keras") for k in (0, 1, 5)]
        out += [dict(out[k], clipvalue=0.5) for k in (0, 7)]
        out += [dict(out[0], clipvalue=0.5, duplicates=d) for d in ("sequential", "keras")]
    return out


@dataclass(frozen=True)
class Kernel:
    """A public kernel: `fast(*arrays, **options)` must equal `slow(...)` byte for byte."""

    name: str
    fast: Callable[..., None] | None
    slow: Callable[..., None]
    make_inputs: Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]
    outputs: tuple[str, ...]
    options: list[dict[str, Any]] = field(default_factory=list)
    formula: str = ""
    dtypes: tuple[Any, ...] = DTYPES   # the `dtype` values make_inputs is tested with


def _sparse_kernel(rowwise: bool) -> Kernel:
    """sparse_adagrad_update with an (N, D) (element-wise) or (N,) (row-wise) accumulator."""
    accumulate = "accum[r] += mean(g*g)" if rowwise else "accum[r] += g*g"
    return Kernel(
        name="sparse_adagrad_update" + (" (row-wise)" if rowwise else ""),
        fast=_kernels.sparse_adagrad_update if _kernels is not None else None,
        slow=reference.sparse_adagrad_update,
        make_inputs=_sparse_inputs(rowwise),
        outputs=("table", "accum"),
        options=_sparse_options(rowwise),
        formula=f"rows r of the batch (duplicates summed): {accumulate}; "
                "table[r] -= lr*g / (sqrt(accum[r]) + eps)",
    )


KERNELS: dict[str, Kernel] = {
    "adagrad_update": Kernel(
        name="adagrad_update",
        fast=_kernels.adagrad_update if _kernels is not None else None,
        slow=reference.adagrad_update,
        make_inputs=_dense_inputs,
        outputs=("param", "accum"),
        options=_dense_options(),
        formula="accum += g*g; param -= clr*g / (sqrt(accum) + eps)",
    ),
    "sparse_adagrad_update": _sparse_kernel(rowwise=False),
    "sparse_adagrad_update (row-wise)": _sparse_kernel(rowwise=True),
}


# ----------------------------------------------------------------------------- mixed precision
def low_precision_dtypes() -> tuple[Any, ...]:
    """float16, and bfloat16 when the optional ml_dtypes is installed."""
    try:
        import ml_dtypes
    except ImportError:
        return (np.float16,)
    return (np.float16, ml_dtypes.bfloat16)


def _mixed_inputs(grad_f32: bool, accum_f32: bool
                  ) -> Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]:
    """Dense inputs with a low-precision `param` of `dtype`, the grad and accumulator in
    float32 or in the param's dtype."""
    def make(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
        f32 = _dense_inputs(rng, shape, np.float32)
        return {"param": f32["param"].astype(dtype),
                "grad": f32["grad"].astype(np.float32 if grad_f32 else dtype),
                "accum": f32["accum"].astype(np.float32 if accum_f32 else dtype)}
    return make


def _mixed_kernel(grad_f32: bool, accum_f32: bool) -> Kernel:
    g = "float32" if grad_f32 else "param's dtype"
    a = "float32" if accum_f32 else "param's dtype"
    return Kernel(
        name=f"adagrad_update (low-precision param, {g} grad, {a} accum)",
        fast=_kernels.adagrad_update if _kernels is not None else None,
        slow=reference.adagrad_update,
        make_inputs=_mixed_inputs(grad_f32, accum_f32),
        outputs=("param", "accum"),
        options=_dense_options(clip=False) + _stochastic_options(),
        formula="float32 arithmetic, one rounding per store: "
                "accum += g*g; param -= clr*g / (sqrt(accum) + eps)",
        dtypes=low_precision_dtypes(),
    )


def _stochastic_options() -> list[dict[str, Any]]:
    """Stochastic rounding of the param's store (_stochastic.py), two keys."""
    return [dict(lr=0.1, eps=1e-6, stochastic_rounding=True, seed=seed, step=step, weight_decay=wd)
            for seed, step, wd in ((7, 3, 0.0), (2**63 + 1, 2**40, 0.05))]


def _sparse_mixed_inputs(rowwise: bool
                         ) -> Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]:
    """_sparse_inputs with a low-precision table of `dtype`, float32 accumulator and grads."""
    def make(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
        f32 = _sparse_inputs(rowwise)(rng, shape, np.float32)
        return dict(f32, table=f32["table"].astype(dtype))
    return make


def _sparse_mixed_kernel(rowwise: bool) -> Kernel:
    """_sparse_kernel (the same functions and outputs) on low-precision tables."""
    return replace(
        _sparse_kernel(rowwise),
        name="sparse_adagrad_update (low-precision table" + (", row-wise)" if rowwise else ")"),
        make_inputs=_sparse_mixed_inputs(rowwise),
        options=_sparse_options(rowwise, extras=False)
        + [dict(o, step=o["step"] % 2**20 + 1, seed=o["seed"]) for o in _stochastic_options()],
        formula="the float32 sparse step on the touched rows, one rounding per store",
        dtypes=low_precision_dtypes(),
    )


for _grad_f32, _accum_f32 in itertools.product((True, False), (True, False)):
    _k = _mixed_kernel(_grad_f32, _accum_f32)
    KERNELS[_k.name] = _k
for _rowwise in (False, True):
    _k = _sparse_mixed_kernel(_rowwise)
    KERNELS[_k.name] = _k


# ----------------------------------------------------------------------------- issue 14: family
# Each rule of fastadagrad._rules.RULES gets a dense and a sparse kernel entry (tests) and
# dense 1e6 / sparse 1e6x64 benchmark cases (bench_cases.py); a new rule is covered by adding
# its RuleSpec.


def _family_options(rule: str) -> list[dict[str, Any]]:
    """Every combination of the switches of `rule` (l1 = 0 or not, l2, the step), >= 8."""
    spec = RULES[rule]
    out: list[dict[str, Any]] = []
    l1s = (0.0, 0.05) if "l1" in spec.hyper else (None,)
    l2s = (0.0, 0.01) if "l2" in spec.hyper else (None,)
    lrs = (0.1, 0.5) if len(l1s) > 1 else (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
    for l1, l2, lr in itertools.product(l1s, l2s, lrs):
        o: dict[str, Any] = {"lr": lr}
        if l1 is not None:
            o["l1"] = l1
        if l2 is not None:
            o["l2"] = l2
        if spec.needs_step:
            o["step"] = 7 if lr > 0.2 else 1
        out.append(o)
    # clipping (issue 14): the rule sees the clipped gradient
    return out + [dict(out[-1], clipvalue=0.5), dict(out[-1], clipnorm=1.0)]


def _family_dense_inputs(rule: str) -> Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]:
    def make(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
        out = {"param": rng.standard_normal(shape, dtype=dtype),
               "grad": rng.standard_normal(shape, dtype=dtype)}
        for name in RULES[rule].states:
            out[name] = np.abs(rng.standard_normal(shape, dtype=dtype)) + dtype(0.1)
        return out
    return make


def _family_sparse_inputs(rule: str) -> Callable[[np.random.Generator, tuple[int, ...], Any], dict[str, np.ndarray]]:
    def make(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
        b = int(np.prod(shape))
        n, d = 2 * b + 3, 13
        out = {"table": rng.standard_normal((n, d), dtype=dtype)}
        for name in RULES[rule].states:
            out[name] = np.abs(rng.standard_normal((n, d), dtype=dtype)) + dtype(0.1)
        out["indices"] = sparse_batches(rng, n, b, 1)[0] if b else np.zeros(0, np.int64)
        out["grads"] = rng.standard_normal((b, d), dtype=dtype)
        return out
    return make


def _family_sparse_call(rule: str, backend: str, duplicates: str) -> Callable[..., None]:
    k = len(RULES[rule].states)

    def call(table: np.ndarray, *rest: np.ndarray, **options: Any) -> None:
        _family.sparse_rule_update(rule, table, list(rest[:k]), rest[k], rest[k + 1],
                                   duplicates=duplicates, backend=backend, **options)
    return call


def _family_kernels() -> dict[str, Kernel]:
    out = {}
    for rule, spec in RULES.items():
        fast = (functools.partial(_family.rule_update, rule, backend="cython")
                if _kernels is not None else None)
        out[f"{rule}_update"] = Kernel(
            name=f"{rule}_update", fast=fast,
            slow=functools.partial(_family.rule_update, rule, backend="numpy"),
            make_inputs=_family_dense_inputs(rule), outputs=("param",) + spec.states,
            options=_family_options(rule), formula=spec.formula)
        for dup in ("sum", "sequential"):
            name = f"sparse {rule}_update ({dup})"
            out[name] = Kernel(
                name=name,
                fast=_family_sparse_call(rule, "cython", dup) if _kernels is not None else None,
                slow=_family_sparse_call(rule, "numpy", dup),
                make_inputs=_family_sparse_inputs(rule), outputs=("table",) + spec.states,
                options=_family_options(rule), formula=f"rows of the batch ({dup}): {spec.formula}")
    return out


KERNELS.update(_family_kernels())
