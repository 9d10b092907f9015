"""The textbook worked example: f(x) = x^2 from x = 4, lr = 1, eps = 1e-8 inside the sqrt."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad._backend import compiled_available

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_x_squared_three_steps(backend_name, dtype):
    x = np.array([4.0], dtype=dtype)
    G = np.zeros(1, dtype=dtype)
    xs, Gs = [], []
    with fastadagrad.backend(backend_name):
        for _ in range(3):
            fastadagrad.adagrad_update(x, 2 * x, G, lr=1.0, eps=1e-8, eps_placement="inside")
            xs.append(float(x[0]))
            Gs.append(float(G[0]))
    # x1 = 4 - 8/sqrt(64) = 3; x2 = 3 - 6/sqrt(100) = 2.4; x3 = 2.4 - 4.8/sqrt(123.04)
    rtol = 1e-6 if dtype == np.float32 else 1e-9  # eps = 1e-8 shifts the 10th digit
    np.testing.assert_allclose(Gs, [64.0, 100.0, 123.04], rtol=rtol)
    np.testing.assert_allclose(xs, [3.0, 2.4, 2.4 - 4.8 / np.sqrt(123.04)], rtol=rtol)
    assert round(xs[2], 3) == 1.967  # 1.96728...: the "~1.968" of the textbook table
