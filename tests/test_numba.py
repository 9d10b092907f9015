"""fastadagrad.numba: the kernels called from @njit code give the bytes of the Python API
(training loops run entirely in nopython mode) and refuse what the Python API refuses before
writing anything. (Without numba: tests/test_numba_optional.py.)"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import fastadagrad
from fastadagrad._backend import _kernels


numba = pytest.importorskip("numba", reason="numba is not installed (pip install numba; needed to "
                                            "test fastadagrad.numba)")
pytestmark = pytest.mark.skipif(_kernels is None, reason="compiled extension not built")
if _kernels is not None:
    from fastadagrad.numba import adagrad_update, sparse_adagrad_update


@numba.njit
def mse_gradient(X: Any, y: Any, w: Any, out: Any) -> None:
    """out = (2/n) X^T (X w - y), by explicit loops: the same bytes whoever calls it."""
    n, d = X.shape
    out[:] = 0
    for i in range(n):
        r = -y[i]
        for j in range(d):
            r += X[i, j] * w[j]
        for j in range(d):
            out[j] += X[i, j] * r
    out *= 2.0 / n


@numba.njit
def train_njit(X: Any, y: Any, w: Any, G: Any, epochs: int, lr: float, eps_placement: str,
               weight_decay: float, lr_decay: float) -> None:
    grad = np.empty_like(w)
    for step in range(1, epochs + 1):
        mse_gradient(X, y, w, grad)
        adagrad_update(w, grad, G, lr=lr, eps_placement=eps_placement,
                       weight_decay=weight_decay, lr_decay=lr_decay, step=step)


def train_python(X: np.ndarray, y: np.ndarray, w: np.ndarray, G: np.ndarray, epochs: int,
                 lr: float, eps_placement: str, weight_decay: float, lr_decay: float) -> None:
    grad = np.empty_like(w)
    for step in range(1, epochs + 1):
        mse_gradient(X, y, w, grad)
        fastadagrad.adagrad_update(w, grad, G, lr=lr, eps_placement=eps_placement,
                                   weight_decay=weight_decay, lr_decay=lr_decay, step=step)


def _regression(dtype: type, n: int = 300, d: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)).astype(dtype)
    return X, y


def _same_training(X: np.ndarray, y: np.ndarray, **options: Any) -> None:
    args = dict(epochs=60, lr=0.1, eps_placement="outside", weight_decay=0.0, lr_decay=0.0)
    args.update(options)
    w1, G1 = np.zeros(X.shape[1], X.dtype), np.zeros(X.shape[1], X.dtype)
    w2, G2 = w1.copy(), G1.copy()
    train_njit(X, y, w1, G1, **args)
    train_python(X, y, w2, G2, **args)
    assert w1.tobytes() == w2.tobytes() and G1.tobytes() == G2.tobytes()
    assert np.abs(w1).sum() > 0   # it trained


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(), dict(eps_placement="inside", weight_decay=0.01,
                                                  lr_decay=0.05)])
def test_njit_training_loop_gives_the_python_api_bytes(compiled, dtype: type,
                                                       options: dict[str, Any]) -> None:
    _same_training(*_regression(dtype), **options)


def test_njit_training_on_the_diabetes_data(compiled) -> None:
    """The regression of examples/diabetes_regression.py (standardised features and target)."""
    datasets = pytest.importorskip("sklearn.datasets",
                                   reason="scikit-learn is not installed (it ships the diabetes data set)")
    X, y = datasets.load_diabetes(return_X_y=True, scaled=False)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    A = np.ascontiguousarray(np.hstack([np.ones((len(X), 1)), X]))
    _same_training(A, (y - y.mean()) / y.std(), epochs=100)


def test_every_isa_and_thread_count(compiled, restore_isa, restore_threads) -> None:
    """The table holds the dispatchers: set_isa and set_num_threads apply inside njit too
    (100,003 elements: above the parallel threshold)."""
    @numba.njit
    def step(p: Any, g: Any, a: Any) -> None:
        adagrad_update(p, g, a, lr=0.1, maximize=True)

    rng = np.random.default_rng(1)
    p, g = rng.standard_normal(100_003).astype(np.float32), rng.standard_normal(100_003).astype(np.float32)
    a = np.abs(rng.standard_normal(100_003)).astype(np.float32)
    ref_p, ref_a = p.copy(), a.copy()
    fastadagrad.reference.adagrad_update(ref_p, g, ref_a, lr=0.1, maximize=True)
    for isa in compiled.isa_available():
        compiled.set_isa(isa)
        for threads in (1, 2):
            fastadagrad.set_num_threads(threads)
            p2, a2 = p.copy(), a.copy()
            step(p2, g, a2)
            assert p2.tobytes() == ref_p.tobytes() and a2.tobytes() == ref_a.tobytes(), (isa, threads)


def test_fortran_and_multidimensional_arrays(compiled) -> None:
    @numba.njit
    def step(p: Any, g: Any, a: Any) -> None:
        adagrad_update(p, g, a, lr=0.1)

    rng = np.random.default_rng(2)
    p = np.asfortranarray(rng.standard_normal((30, 7)))
    g = np.asfortranarray(rng.standard_normal((30, 7)))
    a = np.asfortranarray(np.abs(rng.standard_normal((30, 7))))
    p2, a2 = p.copy(order="A"), a.copy(order="A")
    step(p, g, a)
    fastadagrad.adagrad_update(p2, g, a2, lr=0.1)
    assert p.tobytes(order="A") == p2.tobytes(order="A")
    assert a.tobytes(order="A") == a2.tobytes(order="A")


@numba.njit
def sparse_loop(table: Any, accum: Any, batches: Any, grads: Any, lr: float) -> None:
    for k in range(batches.shape[0]):
        sparse_adagrad_update(table, accum, batches[k], grads[k], lr=lr, weight_decay=0.01)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("rowwise", [False, True])
def test_njit_sparse_loop_gives_the_python_api_bytes(compiled, dtype: type, index_dtype: type,
                                                     rowwise: bool) -> None:
    rng = np.random.default_rng(4)
    table = rng.standard_normal((200, 16)).astype(dtype)
    accum = np.zeros(200 if rowwise else (200, 16), dtype)
    batches = rng.integers(0, 200, size=(20, 32)).astype(index_dtype)   # with duplicates
    grads = rng.standard_normal((20, 32, 16)).astype(dtype)
    t2, a2 = table.copy(), accum.copy()
    sparse_loop(table, accum, batches, grads, 0.05)
    for k in range(len(batches)):
        fastadagrad.sparse_adagrad_update(t2, a2, batches[k], grads[k], lr=0.05, weight_decay=0.01)
    assert table.tobytes() == t2.tobytes() and accum.tobytes() == a2.tobytes()


# ------------------------------------------------------------------ refusals
@numba.njit
def dense_call(p: Any, g: Any, a: Any, lr: Any, eps: Any, eps_placement: Any, weight_decay: Any,
               lr_decay: Any, step: Any, maximize: Any) -> None:
    adagrad_update(p, g, a, lr=lr, eps=eps, eps_placement=eps_placement,
                   weight_decay=weight_decay, lr_decay=lr_decay, step=step, maximize=maximize)


@numba.njit
def dense_literal_placement(p: Any, g: Any, a: Any) -> None:
    adagrad_update(p, g, a, eps_placement="sideways")


HYPER = dict(lr=0.1, eps=1e-10, eps_placement="outside", weight_decay=0.0, lr_decay=0.0,
             step=1, maximize=False)


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.standard_normal(64).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("change, exc, name", [
    (dict(lr=-0.1), ValueError, "lr"), (dict(lr=float("nan")), ValueError, "lr"),
    (dict(eps=float("inf")), ValueError, "eps"), (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(lr_decay=-1.0), ValueError, "lr_decay"), (dict(step=0), ValueError, "step"),
    (dict(eps_placement="both"), ValueError, "eps_placement"),
    (dict(step=1.0), TypeError, "step"), (dict(maximize=1), TypeError, "maximize"),
    (dict(lr=True), TypeError, "lr"), (dict(eps_placement=1), ValueError, "eps_placement"),
])
def test_bad_hyper_parameters_are_refused_before_any_write(compiled, change: dict[str, Any],
                                                           exc: type, name: str) -> None:
    p, g, a = _arrays()
    before = [x.copy() for x in (p, g, a)]
    with pytest.raises(exc, match=f"`{name}`"):
        dense_call(p, g, a, **{**HYPER, **change})
    assert all(x.tobytes() == y.tobytes() for x, y in zip((p, g, a), before))


def test_a_bad_literal_placement_is_refused(compiled) -> None:
    p, g, a = _arrays()
    before = p.copy()
    with pytest.raises(ValueError, match="`eps_placement`"):
        dense_literal_placement(p, g, a)
    assert p.tobytes() == before.tobytes()


def _bad_arrays() -> list[tuple[Callable[[list[np.ndarray]], tuple[Any, ...]], type, str]]:
    return [
        (lambda x: (x[0], x[1].astype(np.float64), x[2]), TypeError, "`grad`"),
        (lambda x: (x[0].astype(np.int32), x[1], x[2]), TypeError, "`param`"),
        (lambda x: (x[0], x[1], x[2][:10]), ValueError, "`accum`"),
        (lambda x: (x[0], x[1], x[2].reshape(8, 8)), ValueError, "`accum`"),
        (lambda x: (x[0], x[1], x[0]), ValueError, "`param` and `accum` overlap"),
        (lambda x: (x[0], x[0], x[2]), ValueError, "`param` and `grad` overlap"),
        (lambda x: (x[0][::2], x[1][::2], x[2][::2]), ValueError, "contiguous"),
        (lambda x: (x[0], x[1], np.frombuffer(x[2].tobytes(), np.float32)), ValueError, "`accum` is read-only"),
        (lambda x: (x[0], tuple(x[1]), x[2]), TypeError, "`grad`"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_arrays())))
def test_bad_arrays_are_refused_before_any_write(compiled, case: int) -> None:
    make, exc, message = _bad_arrays()[case]
    arrays = _arrays()
    args = make(arrays)
    before = [x.copy() for x in arrays]
    with pytest.raises(exc, match=message):
        dense_call(*args, **HYPER)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(arrays, before))


@numba.njit
def sparse_call(table: Any, accum: Any, indices: Any, grads: Any) -> None:
    sparse_adagrad_update(table, accum, indices, grads, lr=0.1)


@pytest.mark.parametrize("change, exc, message", [
    (dict(indices=np.array([0, 50])), ValueError, "`indices` holds an index out of range"),
    (dict(indices=np.array([-1, 3])), ValueError, "`indices` holds an index out of range"),
    (dict(indices=np.array([0.0, 1.0])), TypeError, "`indices`"),
    (dict(grads=np.zeros((3, 8))), ValueError, "`grads`"),
    (dict(accum=np.zeros(49)), ValueError, "`accum`"),
    (dict(grads=np.zeros((2, 8), np.float32)), TypeError, "`grads`"),
])
def test_bad_sparse_arguments_are_refused_before_any_write(compiled, change: dict[str, Any],
                                                           exc: type, message: str) -> None:
    rng = np.random.default_rng(6)
    args = dict(table=rng.standard_normal((50, 8)), accum=np.ones(50),
                indices=np.array([1, 3]), grads=rng.standard_normal((2, 8)))
    args.update(change)
    table, accum = args["table"].copy(), args["accum"].copy()
    with pytest.raises(exc, match=message):
        sparse_call(**args)
    assert table.tobytes() == args["table"].tobytes() and accum.tobytes() == args["accum"].tobytes()


def test_called_from_python_it_is_the_python_api(compiled) -> None:
    p, g, a = _arrays()
    p2, a2 = p.copy(), a.copy()
    adagrad_update(p[::2], g[::2], a[::2], lr=0.1)        # strided: fine in the Python API
    fastadagrad.adagrad_update(p2[::2], g[::2], a2[::2], lr=0.1)
    assert p.tobytes() == p2.tobytes() and a.tobytes() == a2.tobytes()
