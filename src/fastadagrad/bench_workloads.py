"""The benchmark workloads: inputs of one case with its compiled, NumPy and torch steps.

`python -m fastadagrad bench`, benchmarks/ and `python -m fastadagrad` time these; the rows of
the table (which workload at which size) are in bench_cases.py.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Protocol

import numpy as np

from fastadagrad import family as _family
from fastadagrad import reference
from fastadagrad._backend import _kernels
from fastadagrad._registry import sparse_batches
from fastadagrad._rules import RULES


def _uniform(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    """Uniform in [-1, 1), made in place (benchmark inputs: several times faster to draw than
    normal variates, which matters for the 1e6 x 64 tables and 1.6e7 arrays)."""
    x = np.asarray(rng.random(shape, dtype=dtype))
    x *= 2
    x -= 1
    return x


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
                 rowwise: bool = False, duplicates: str = "sum") -> None:
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
                fn(arrays[0], arrays[1], self.batches[i % 16], self.grads[i % 4], lr=0.01,
                   duplicates=duplicates)
            return run

        self.fast: Callable[[], Any] = step("fast", _kernels.sparse_adagrad_update, self.f)
        self.numpy: Callable[[], Any] = step("numpy", reference.sparse_adagrad_update, self.s)
        self.probe: Callable[[], Any] | None = None
        self.rowwise = rowwise
        self.duplicates = duplicates

    def torch(self) -> Callable[[], None] | None:
        if self.rowwise or self.duplicates != "sum":
            return None  # torch has no row-wise AdaGrad; it sums duplicates (coalesce)
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


class ClipWorkload(DenseWorkload):
    """adagrad_update with clipvalue or clipnorm (issue 14), against torch's clip_grad_value_ /
    clip_grad_norm_(foreach=True) followed by torch.optim.Adagrad(fused=True)."""

    def torch(self) -> Callable[[], None] | None:
        import torch
        p = torch.nn.Parameter(torch.from_numpy(self.s["param"].copy()))
        g = torch.from_numpy(self.s["grad"].copy())
        opt = torch.optim.Adagrad([p], lr=self.options["lr"], eps=self.options["eps"], fused=True)
        value = self.options.get("clipvalue")
        norm = float(self.options.get("clipnorm") or 0.0)

        def step() -> None:
            p.grad = g
            if value is not None:
                torch.nn.utils.clip_grad_value_([p], value)
            else:
                torch.nn.utils.clip_grad_norm_([p], norm, foreach=True)
            opt.step()
        return step
