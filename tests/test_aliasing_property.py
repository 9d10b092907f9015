"""Hypothesis: random views of ONE buffer passed as param/grad/accum (dense) or
table/accum/indices/values (sparse) are either rejected before any write, with the same error on
both backends, or give identical bytes on both backends (issue 11 §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastadagrad
from fastadagrad._backend import compiled_available

from _helpers import same_bits

pytestmark = pytest.mark.skipif(not compiled_available(),
                                reason="compares the compiled backend with the NumPy backend")

N = 64            # float64 elements in the shared buffer
ITEM = 8


def fresh_buffer(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    buf = rng.standard_normal(N)
    small = buf[N // 2:N // 2 + 8].view(np.int64)
    small[:] = rng.integers(0, 6, size=8)   # a stretch that reads as in-range int64 indices
    return buf


# A view: ("buf", byte offset, shape, byte strides) into the shared buffer, or ("own", ...)
# for an array of its own (so that non-aliasing, accepted calls are drawn too).
def view_spec(shape):
    ndim = len(shape)
    return st.tuples(
        st.sampled_from(["buf", "buf", "own"]),
        st.integers(0, N * ITEM - 1),
        st.just(shape),
        st.lists(st.sampled_from([-16, -8, 0, 4, 8, 16, 24, 32]), min_size=ndim, max_size=ndim)
        .map(tuple),
    )


def in_bounds(spec, itemsize=ITEM) -> bool:
    kind, off, shape, strides = spec
    if kind == "own" or 0 in shape:
        return True
    lo = off + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    hi = off + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + itemsize
    return lo >= 0 and hi <= N * ITEM


def make(spec, buf, dtype=np.float64, seed=0):
    """The view `spec` describes, of `buf`'s memory (no copy), or an array of its own."""
    kind, off, shape, strides = spec
    if kind == "own":
        rng = np.random.default_rng(seed)
        if np.dtype(dtype).kind == "i":
            return rng.integers(0, 6, size=shape).astype(dtype)
        return np.abs(rng.standard_normal(shape)).astype(dtype)
    return np.ndarray(shape=shape, dtype=dtype, buffer=buf, offset=off, strides=strides)


def run(call, seed):
    """Run `call(buf)` on a fresh buffer under each backend: (outcome, buffer, extras)."""
    results = []
    for name in ("cython", "numpy"):
        buf = fresh_buffer(seed)
        before = buf.copy()
        with fastadagrad.backend(name):
            try:
                owned = call(buf)
                outcome = None
            except (TypeError, ValueError) as exc:
                owned = []
                outcome = (type(exc), str(exc))
        if outcome is not None:
            assert buf.tobytes() == before.tobytes(), f"{name}: a rejected call wrote {outcome}"
        results.append((outcome, buf, owned))
    (o1, b1, w1), (o2, b2, w2) = results
    assert o1 == o2
    assert same_bits(b1, b2)
    for x, y in zip(w1, w2):
        assert same_bits(x, y)
    return o1


shapes = st.lists(st.integers(0, 5), min_size=1, max_size=2).map(tuple)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data(), seed=st.integers(0, 3))
def test_dense_views_of_one_buffer(data, seed):
    shape = data.draw(shapes)
    specs = [data.draw(view_spec(shape).filter(in_bounds)) for _ in range(3)]

    def call(buf):
        p, g, a = (make(s, buf, seed=seed + k) for k, s in enumerate(specs))
        fastadagrad.adagrad_update(p, g, a, lr=0.1)
        return [x for x, s in zip((p, g, a), specs) if s[0] == "own"]

    run(call, seed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data(), seed=st.integers(0, 3), rowwise=st.booleans())
def test_sparse_views_of_one_buffer(data, seed, rowwise):
    n, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    b = data.draw(st.integers(0, 5))
    row = st.integers(0, N - 1)
    t_off = data.draw(row.filter(lambda o: o + n * d <= N)) * ITEM
    a_shape = (n,) if rowwise else (n, d)
    a_spec = data.draw(st.tuples(st.sampled_from(["buf", "own"]),
                                 row.filter(lambda o: o + n * (1 if rowwise else d) <= N),
                                 st.just(a_shape), st.just(None)))
    i_spec = data.draw(view_spec((b,)).filter(in_bounds))
    v_spec = data.draw(view_spec((b, d)).filter(in_bounds))

    def call(buf):
        table = buf[t_off // ITEM:t_off // ITEM + n * d].reshape(n, d)
        if a_spec[0] == "own":
            accum = np.zeros(a_shape)
        else:
            o = a_spec[1]
            accum = buf[o:o + int(np.prod(a_shape))].reshape(a_shape)
        idx = make(i_spec, buf, dtype=np.int64, seed=seed)
        values = make(v_spec, buf, seed=seed + 1)
        fastadagrad.sparse_adagrad_update(table, accum, idx, values, lr=0.1)
        return [accum] if a_spec[0] == "own" else []

    run(call, seed)
