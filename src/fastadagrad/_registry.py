"""The one registry of kernels: each compiled function, its NumPy twin, and how to make inputs.

Tests (equivalence over dtypes, sizes, layouts, options), the benchmark CLI and benchmarks/
all iterate over KERNELS, so a new kernel is tested and benchmarked by adding one entry here.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from fastadagrad import reference
from fastadagrad._backend import _kernels

DTYPES = (np.float32, np.float64)

#: Sizes that straddle SIMD widths (4/8/16 lanes) and the thread split (PARALLEL_MIN_ELEMENTS,
#: chunks rounded to 16 elements).
_PMIN = 32768
SIZES = (0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, 100_003,
         _PMIN - 1, _PMIN, _PMIN + 1, _PMIN + 17, 2 * _PMIN + 31)


def _uniform(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    """Uniform in [-1, 1), made in place (benchmark inputs: several times faster to draw than
    normal variates, which matters for the 1e6 x 64 tables and 1.6e7 arrays)."""
    x = np.asarray(rng.random(shape, dtype=dtype))
    x *= 2
    x -= 1
    return x


def _dense_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> dict[str, np.ndarray]:
    return {
        "param": rng.standard_normal(shape, dtype=dtype),
        "grad": rng.standard_normal(shape, dtype=dtype),
        "accum": np.abs(rng.standard_normal(shape, dtype=dtype)),
    }


def _dense_options() -> list[dict[str, Any]]:
    """Every combination of the options that change the arithmetic."""
    out = []
    for maximize, wd, placement, (lr_decay, step) in itertools.product(
            (False, True), (0.0, 0.05), ("outside", "inside"), ((0.0, 1), (0.1, 7))):
        out.append(dict(lr=0.1, eps=1e-6, maximize=maximize, weight_decay=wd,
                        eps_placement=placement, lr_decay=lr_decay, step=step))
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


def _sparse_options() -> list[dict[str, Any]]:
    return [dict(lr=0.1, eps=1e-6, maximize=m, weight_decay=wd, eps_placement=pl)
            for m, wd, pl in itertools.product((False, True), (0.0, 0.05), ("outside", "inside"))]


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
        options=_sparse_options(),
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
        options=_dense_options() + _stochastic_options(),
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
    return Kernel(
        name="sparse_adagrad_update (low-precision table" + (", row-wise)" if rowwise else ")"),
        fast=_kernels.sparse_adagrad_update if _kernels is not None else None,
        slow=reference.sparse_adagrad_update,
        make_inputs=_sparse_mixed_inputs(rowwise),
        outputs=("table", "accum"),
        options=_sparse_options() + [dict(o, step=o["step"] % 2**20 + 1, seed=o["seed"])
                                     for o in _stochastic_options()],
        formula="the float32 sparse step on the touched rows, one rounding per store",
        dtypes=low_precision_dtypes(),
    )


for _grad_f32, _accum_f32 in itertools.product((True, False), (True, False)):
    _k = _mixed_kernel(_grad_f32, _accum_f32)
    KERNELS[_k.name] = _k
for _rowwise in (False, True):
    _k = _sparse_mixed_kernel(_rowwise)
    KERNELS[_k.name] = _k


# ----------------------------------------------------------------------------- benchmark cases
class Workload(Protocol):
    """Inputs of one benchmark case with its steps: `fast` (compiled) and `numpy` (the twin)
    on separate copies of the same inputs, so that `identical()` can compare their outputs;
    `probe` (dense only) and `torch()` (builds torch's step, or None)."""

    fast: Callable[[], Any]
    numpy: Callable[[], Any]
    probe: Callable[[], Any] | None

    def torch(self) -> Callable[[], Any] | None: ...
    def identical(self) -> bool: ...


class DenseWorkload:
    OPTIONS = dict(lr=0.01, eps=1e-10)

    def __init__(self, n: int, dtype: Any, rng: np.random.Generator,
                 options: dict[str, Any] | None = None) -> None:
        self.options = dict(self.OPTIONS, **(options or {}))
        self.f = {"param": _uniform(rng, n, dtype), "grad": _uniform(rng, n, dtype),
                  "accum": np.abs(_uniform(rng, n, dtype))}
        self.s = {k: v.copy() for k, v in self.f.items()}
        # Bound once, so a timed call costs what a user's call costs and nothing more.
        self.fast: Callable[[], Any] = functools.partial(_kernels.adagrad_update, *self.f.values(),
                                                         **self.options)
        self.numpy: Callable[[], Any] = functools.partial(reference.adagrad_update,
                                                          *self.s.values(), **self.options)
        self.probe: Callable[[], Any] | None = functools.partial(_kernels.bandwidth_probe,
                                                                 *self.f.values())

    def torch(self) -> Callable[[], None] | None:
        import torch
        p = torch.nn.Parameter(torch.from_numpy(self.s["param"].copy()))
        p.grad = torch.from_numpy(self.s["grad"])   # read only
        opt = torch.optim.Adagrad([p], lr=self.options["lr"], eps=self.options["eps"], fused=True)
        return opt.step

    def identical(self) -> bool:
        return all(self.f[k].tobytes() == self.s[k].tobytes() for k in ("param", "accum"))



class OptimizerWorkload:
    """AdaGrad.step over `count` arrays of `size` elements: the compiled backend's one call
    against the NumPy backend's per-array loop, and torch.optim.Adagrad(fused=True)."""

    def __init__(self, count: int, size: int, dtype: Any, rng: np.random.Generator) -> None:
        from fastadagrad import _backend
        from fastadagrad.optimizer import AdaGrad

        self.params = [rng.standard_normal(size, dtype=dtype) for _ in range(count)]
        self.grads = [rng.standard_normal(size, dtype=dtype) for _ in range(count)]
        self.f = [p.copy() for p in self.params]
        self.s = [p.copy() for p in self.params]
        self.fast_opt = AdaGrad(self.f, lr=0.01)
        self.slow_opt = AdaGrad(self.s, lr=0.01)
        self.fast: Callable[[], Any] = functools.partial(self.fast_opt.step, self.grads)
        self.probe: Callable[[], Any] | None = None

        def numpy() -> None:
            with _backend.backend("numpy"):
                self.slow_opt.step(self.grads)
        self.numpy: Callable[[], Any] = numpy

    def torch(self) -> Callable[[], None] | None:
        import torch
        ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in self.params]
        for p, g in zip(ps, self.grads):
            p.grad = torch.from_numpy(g.copy())
        return torch.optim.Adagrad(ps, lr=0.01, fused=True).step

    def identical(self) -> bool:
        accs = zip(self.fast_opt.groups[0].accums, self.slow_opt.groups[0].accums)
        return (all(a.tobytes() == b.tobytes() for a, b in zip(self.f, self.s))
                and all(a.tobytes() == b.tobytes() for a, b in accs))


class SparseWorkload:
    """sparse_adagrad_update on an (n_rows, dim) table with a fresh random batch per call
    (cycling through 16 pre-drawn batches), against the NumPy backend and torch's sparse
    Embedding + Adagrad step."""

    def __init__(self, n_rows: int, dim: int, batch: int, dtype: Any, rng: np.random.Generator,
                 rowwise: bool = False) -> None:
        table = _uniform(rng, (n_rows, dim), dtype)
        self.batches = sparse_batches(rng, n_rows, batch, 16)
        self.grads = [_uniform(rng, (batch, dim), dtype) for _ in range(4)]
        acc_shape = (n_rows,) if rowwise else (n_rows, dim)
        # np.full writes every page now: np.zeros would leave the first-touch page faults
        # (several ms per step on a 256 MB table) inside the timed steps.
        self.f = (table, np.full(acc_shape, 0.1, dtype))
        self.s = (table.copy(), np.full(acc_shape, 0.1, dtype))
        self.calls = {"fast": 0, "numpy": 0}

        def step(which: str, fn: Callable[..., None], arrays: tuple[np.ndarray, np.ndarray]) -> Callable[[], None]:
            def run() -> None:
                i = self.calls[which]
                self.calls[which] = i + 1
                fn(arrays[0], arrays[1], self.batches[i % 16], self.grads[i % 4], lr=0.01)
            return run

        self.fast: Callable[[], Any] = step("fast", _kernels.sparse_adagrad_update, self.f)
        self.numpy: Callable[[], Any] = step("numpy", reference.sparse_adagrad_update, self.s)
        self.probe: Callable[[], Any] | None = None
        self.rowwise = rowwise

    def torch(self) -> Callable[[], None] | None:
        if self.rowwise:
            return None  # torch has no row-wise AdaGrad
        import torch
        table = self.s[0]   # torch's start (any values of the right shape time the same)
        n_rows, dim = table.shape
        emb = torch.nn.Embedding(n_rows, dim, sparse=True,   # _weight: no random init
                                 _weight=torch.from_numpy(table.copy()))
        opt = torch.optim.Adagrad(emb.parameters(), lr=0.01)
        batches = [torch.from_numpy(b) for b in self.batches]
        grads = [torch.from_numpy(g) for g in self.grads]
        calls = [0]

        def step() -> None:
            i = calls[0]
            calls[0] = i + 1
            idx = batches[i % 16]
            emb.weight.grad = torch.sparse_coo_tensor(idx[None, :], grads[i % 4],
                                                      emb.weight.shape, check_invariants=False)
            opt.step()
        return step

    def identical(self) -> bool:
        return all(a.tobytes() == b.tobytes() for a, b in zip(self.f, self.s))


class TorchDropinWorkload:
    """fastadagrad.torch.Adagrad.step() on one float parameter of n elements with its grad set
    (the compiled backend; `numpy`: the same drop-in on the NumPy backend), against
    torch.optim.Adagrad(fused=True)."""

    def __init__(self, n: int, dtype: Any, rng: np.random.Generator) -> None:
        import torch

        import fastadagrad.torch as ft
        from fastadagrad import _backend

        self.init = _uniform(rng, n, dtype)
        self.grad = _uniform(rng, n, dtype)
        self.params = []
        steps = []
        for _ in range(2):
            p = torch.nn.Parameter(torch.from_numpy(self.init.copy()))
            p.grad = torch.from_numpy(self.grad.copy())
            self.params.append(p)
            steps.append(ft.Adagrad([p], lr=0.01).step)
        self.fast: Callable[[], Any] = steps[0]

        def numpy() -> None:
            with _backend.backend("numpy"):
                steps[1]()
        self.numpy: Callable[[], Any] = numpy
        self.probe: Callable[[], Any] | None = None

    def torch(self) -> Callable[[], Any] | None:
        import torch
        p = torch.nn.Parameter(torch.from_numpy(self.init.copy()))
        p.grad = torch.from_numpy(self.grad.copy())
        return torch.optim.Adagrad([p], lr=0.01, fused=True).step

    def identical(self) -> bool:
        a, b = (p.detach().numpy() for p in self.params)
        return a.tobytes() == b.tobytes()


def _torch_dropin(n: int, dtype: Any, rng: np.random.Generator) -> Workload:
    return TorchDropinWorkload(n, dtype, rng)


def _mixed_workload(n: int, dtype: Any, rng: np.random.Generator) -> Workload:
    return MixedWorkload(n, rng)   # fixes its own dtypes


def _installed(package: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(package) is not None


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark table."""

    name: str            # e.g. "dense 1e6"
    kind: str            # "dense" | "multi" | "sparse"
    elements: int        # elements updated per step
    bytes_per_element: float   # memory traffic per element per step, in units of the itemsize
    make: Callable[[Any, np.random.Generator], Workload] | None  # None: not available yet
    quick: bool = True   # part of --quick
    only_dtype: str | None = None   # listed in this dtype's table only (it fixes its own dtypes)


def _dense_case(n: int, quick: bool = True) -> BenchCase:
    mantissa, exponent = f"{n:.1e}".split("e")
    label = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    def make(dtype: Any, rng: np.random.Generator) -> Workload:
        return DenseWorkload(n, dtype, rng)
    return BenchCase(name=f"dense {label}", kind="dense", elements=n, bytes_per_element=5,
                     make=make, quick=quick)


DENSE_SIZES = (1_000, 10_000, 100_000, 1_000_000, 16_000_000, 64_000_000)

class MixedWorkload:
    """adagrad_update on a bfloat16 param and grad with a float32 accumulator (14 bytes per
    element instead of float32's 20), against the NumPy twin and torch.optim.Adagrad(fused=True)
    on bfloat16 (whose state is bfloat16). The probe is the float32 bandwidth probe over as many
    bytes as this step moves, so `% of probe` is already adjusted for the bytes moved."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        import ml_dtypes
        bf16 = ml_dtypes.bfloat16
        self.f = {"param": _uniform(rng, n, np.float32).astype(bf16),
                  "grad": _uniform(rng, n, np.float32).astype(bf16),
                  "accum": np.abs(_uniform(rng, n, np.float32))}
        self.s = {k: v.copy() for k, v in self.f.items()}
        self.fast: Callable[[], Any] = functools.partial(_kernels.adagrad_update, *self.f.values(),
                                                         lr=0.01, eps=1e-10)
        self.numpy: Callable[[], Any] = functools.partial(reference.adagrad_update,
                                                          *self.s.values(), lr=0.01, eps=1e-10)
        m = max(1, n * 14 // 20)
        probe = [_uniform(rng, m, np.float32) for _ in range(3)]
        self.probe: Callable[[], Any] | None = functools.partial(_kernels.bandwidth_probe, *probe)

    def torch(self) -> Callable[[], None] | None:
        import torch
        p = torch.nn.Parameter(torch.from_numpy(self.s["param"].view(np.int16).copy())
                               .view(torch.bfloat16))
        p.grad = torch.from_numpy(self.s["grad"].view(np.int16).copy()).view(torch.bfloat16)
        return torch.optim.Adagrad([p], lr=0.01, eps=1e-10, fused=True).step

    def identical(self) -> bool:
        return all(self.f[k].tobytes() == self.s[k].tobytes() for k in ("param", "accum"))


BENCH_CASES: list[BenchCase] = [
    *(_dense_case(n, quick=n < 64_000_000) for n in DENSE_SIZES),
    BenchCase("optimizer 200x1000", "multi", 200 * 1000, 5,
              lambda dtype, rng: OptimizerWorkload(200, 1000, dtype, rng)),
    BenchCase("sparse 1e6x64 batch 4096", "sparse", 4096 * 64, 5,
              lambda dtype, rng: SparseWorkload(1_000_000, 64, 4096, dtype, rng)),
    BenchCase("sparse row-wise 1e6x64 batch 4096", "sparse", 4096 * 64, 3,
              lambda dtype, rng: SparseWorkload(1_000_000, 64, 4096, dtype, rng, rowwise=True)),
    *(BenchCase(f"torch drop-in {label}", "torch", n, 5,
                functools.partial(_torch_dropin, n) if _installed("torch") else None)
      for n, label in ((1_000, "1e3"), (16_000_000, "1.6e7"))),
    # mixed precision (issue 15): listed in the float32 table, next to the float32 step
    *(BenchCase(f"bf16 param+grad, f32 accum {label}", "mixed", n, 3.5,
                functools.partial(_mixed_workload, n) if _installed("ml_dtypes") else None,
                only_dtype="float32")
      for n, label in ((1_000, "1e3"), (16_000_000, "1.6e7"))),
]


# ----------------------------------------------------------------------------- issue 14: family
# Each rule of fastadagrad._rules.RULES gets a dense and a sparse kernel entry (tests) and
# dense 1e6 / sparse 1e6x64 benchmark cases; a new rule is covered by adding its RuleSpec.
from fastadagrad import family as _family  # noqa: E402
from fastadagrad._rules import RULES  # noqa: E402


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
    return out


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


class FamilyWorkload:
    """A family rule, dense (n elements) or sparse (n_rows x dim table, batches of `batch`
    indices with 25% repeats): compiled against the NumPy backend (no torch counterpart)."""

    def __init__(self, rule: str, dtype: Any, rng: np.random.Generator, n: int = 0,
                 sparse: tuple[int, int, int] | None = None) -> None:
        spec = RULES[rule]
        hyper: dict[str, Any] = {k: v for k, v in spec.hyper.items()}
        hyper.update({"lr": 0.01} | ({"l1": 1e-4} if "l1" in hyper else {}))
        if spec.needs_step:
            hyper["step"] = 10
        self.probe: Callable[[], Any] | None = None
        shape = (sparse[0], sparse[1]) if sparse else (n,)
        p = _uniform(rng, shape, dtype)
        states = [np.full(shape, v if v > 0 else 0.1, dtype) for v in spec.state_init]
        self.f = [p, *states]
        self.s = [x.copy() for x in self.f]
        if sparse is None:
            g = _uniform(rng, shape, dtype)
            self.fast: Callable[[], Any] = functools.partial(
                _family.rule_update, rule, self.f[0], g, *self.f[1:], backend="cython", **hyper)
            self.numpy: Callable[[], Any] = functools.partial(
                _family.rule_update, rule, self.s[0], g, *self.s[1:], backend="numpy", **hyper)
        else:
            batches = sparse_batches(rng, sparse[0], sparse[2], 16)
            grads = _uniform(rng, (sparse[2], sparse[1]), dtype)
            calls = {"cython": 0, "numpy": 0}

            def step(backend: str, arrays: list[np.ndarray]) -> Callable[[], None]:
                def run() -> None:
                    i = calls[backend]
                    calls[backend] = i + 1
                    _family.sparse_rule_update(rule, arrays[0], arrays[1:], batches[i % 16],
                                               grads, backend=backend, **hyper)
                return run
            self.fast = step("cython", self.f)
            self.numpy = step("numpy", self.s)

    def torch(self) -> Callable[[], Any] | None:
        return None

    def identical(self) -> bool:
        return all(a.tobytes() == b.tobytes() for a, b in zip(self.f, self.s))


BENCH_CASES.extend(
    case for rule, spec in RULES.items() for case in (
        BenchCase(f"{rule} 1e6", "family", 1_000_000, 3 + 2 * len(spec.states),
                  functools.partial(lambda r, dtype, rng: FamilyWorkload(r, dtype, rng, n=1_000_000), rule)),
        BenchCase(f"sparse {rule} 1e6x64 batch 4096", "family", 4096 * 64, 3 + 2 * len(spec.states),
                  functools.partial(lambda r, dtype, rng: FamilyWorkload(r, dtype, rng, sparse=(1_000_000, 64, 4096)), rule),
                  quick=False)))
