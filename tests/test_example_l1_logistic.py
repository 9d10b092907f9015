"""examples/l1_logistic_proximal.py: L1 logistic regression with proximal AdaGrad on
scikit-learn's bundled breast cancer data (issue 14). Skipped without the examples extras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastadagrad
from _helpers import load_example

EXTRAS = "needs the examples extras: pip install 'fastadagrad[examples]'"
pytest.importorskip("matplotlib", reason=f"matplotlib not installed; {EXTRAS}")
pytest.importorskip("sklearn", reason=f"scikit-learn not installed; {EXTRAS}")


def test_l1_gives_exact_zeros(monkeypatch, tmp_path, capsys):
    ex = load_example("l1_logistic_proximal", monkeypatch)
    out = ex.main(["--out", str(tmp_path)])
    d = 30
    zeros = [d - nz for nz in out["nonzero"]]
    # Measured (lr 0.5, batch 32, 30 epochs): zeros 0, 0, 2, 4, 16, 16 for l1 = 0 ... 0.1;
    # test accuracy 0.951 .. 0.972 (136 .. 139 of 143), log-loss 0.1265 at l1 = 0, 0.0857 at 3e-3.
    assert out["l1"] == [0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]
    assert zeros[0] == 0 and zeros[1] == 0
    assert all(a <= b for a, b in zip(zeros, zeros[1:]))     # more L1, more exact zeros
    assert zeros[4] >= 12
    assert min(out["accuracy"]) >= 0.94
    assert min(out["log_loss"][1:4]) < out["log_loss"][0]     # some L1 generalises better
    for w, z in zip(out["weights"], zeros):
        assert np.sum(w == 0.0) == z                          # exact zeros, not tiny values
    printed = capsys.readouterr().out
    assert "16/30" in printed and "saved" in printed
    png = Path(out["png"])
    assert png == tmp_path / "l1_logistic.png" and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not fastadagrad.compiled_available(), reason="compiled extension not built")
def test_same_weights_on_both_backends(monkeypatch, tmp_path):
    ex = load_example("l1_logistic_proximal", monkeypatch)
    data = ex.load_data()
    for l1 in (0.0, 0.03):
        got = []
        for backend in ("cython", "numpy"):
            with fastadagrad.backend(backend):
                got.append(ex.train(data[0], data[1], l1, 5, 0.5))
        assert got[0][0].tobytes() == got[1][0].tobytes() and got[0][1] == got[1][1]
