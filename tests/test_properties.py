"""Property-based equivalence: random shapes, layouts and values, special values included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastadagrad
from fastadagrad._backend import _kernels
from _helpers import assert_same_bits

pytestmark = pytest.mark.skipif(_kernels is None, reason="compiled extension not built")


def arrays(dtype, shape):
    # Every float incl. zeros, subnormals, huge values, NaN and inf (hypothesis' defaults).
    return hnp.arrays(dtype, shape, elements=st.floats(width=np.dtype(dtype).itemsize * 8),
                      fill=st.nothing())


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40))
    p = draw(arrays(dtype, shape))
    g = draw(arrays(dtype, shape))
    a = draw(arrays(dtype, shape))
    np.abs(a, out=a)
    view = draw(st.sampled_from(["asis", "transpose", "reverse", "fortran"]))
    if view == "transpose":
        p, g, a = p.T, g.T, a.T
    elif view == "reverse" and p.ndim:
        p, g, a = p[::-1], g[::-1], a[::-1]
    elif view == "fortran":
        p, g, a = (np.asfortranarray(x) for x in (p, g, a))
    options = dict(
        lr=draw(st.floats(0, 10)),
        eps=draw(st.sampled_from([0.0, 1e-10, 1e-7, 1e-3, 1.0])),
        eps_placement=draw(st.sampled_from(["outside", "inside"])),
        weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.5])),
        lr_decay=draw(st.sampled_from([0.0, 0.01, 3.0])),
        step=draw(st.integers(1, 10**6)),
        maximize=draw(st.booleans()),
    )
    return p, g, a, options


@settings(max_examples=300, deadline=None)
@given(problems())
def test_compiled_equals_numpy(problem):
    p, g, a, options = problem
    p1, a1 = p.copy(order="K"), a.copy(order="K")
    p2, a2 = p.copy(order="K"), a.copy(order="K")
    with fastadagrad.backend("cython"):
        fastadagrad.adagrad_update(p1, g, a1, **options)
    fastadagrad.reference.adagrad_update(p2, g, a2, **options)
    assert_same_bits(p1, p2, "param")
    assert_same_bits(a1, a2, "accum")


@settings(max_examples=100, deadline=None)
@given(problems())
def test_accumulator_never_decreases(problem):
    """accum_new = accum + g*g >= accum wherever it is not NaN (a property of the formula)."""
    p, g, a, options = problem
    a0 = a.copy()
    with fastadagrad.backend("cython"):
        fastadagrad.adagrad_update(p.copy(), g, a, **options)
    ok = np.isnan(a) | (a >= a0)
    assert ok.all()
