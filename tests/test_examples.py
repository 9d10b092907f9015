"""The runnable demonstrations in examples/: run each headless with --out tmp_path and check
its numbers against the formulas, then check the PNG it wrote.

examples/ is not a package: the scripts are loaded by file path (with examples/ on sys.path for
their shared `_common` helper). Skipped only when the `fastadagrad[examples]` extras
(matplotlib, scikit-learn) are missing.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from _helpers import load_example, run_python

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXTRAS = "needs the examples extras: pip install 'fastadagrad[examples]'"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib", reason=f"matplotlib not installed; {EXTRAS}")


def assert_png(path: Path, expected: Path) -> None:
    """`path` is `expected`, a PNG file with a plausible image size in its IHDR header."""
    assert Path(path) == expected
    data = expected.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200, (width, height)


# --- x_squared.py -----------------------------------------------------------------------------

def textbook_x_squared(steps: int) -> list[tuple[float, float, float, float, float]]:
    """(x, gradient, G, eta, update) per step from the formula, eps = 1e-8 inside the sqrt."""
    x, G, rows = 4.0, 0.0, []
    for _ in range(steps):
        g = 2.0 * x
        G += g * g
        eta = 1.0 / math.sqrt(G + 1e-8)
        rows.append((x - eta * g, g, G, eta, -eta * g))
        x -= eta * g
    return rows


def test_x_squared_table(monkeypatch, tmp_path, capsys):
    mod = load_example("x_squared", monkeypatch)
    result = mod.main(["--out", str(tmp_path)])
    rows = result["rows"]
    assert [r["step"] for r in rows] == list(range(1, 11))
    for got, (x, g, G, eta, update) in zip(rows, textbook_x_squared(10)):
        assert got["x"] == pytest.approx(x, rel=1e-12)
        assert got["gradient"] == pytest.approx(g, rel=1e-12)
        assert got["G"] == pytest.approx(G, rel=1e-12)
        assert got["eff_lr"] == pytest.approx(eta, rel=1e-12)
        assert got["update"] == pytest.approx(update, rel=1e-12)
    # The textbook's first three rows: x = 3, 2.4, 2.4 - 4.8/sqrt(123.04) = 1.96728...
    x3 = 2.4 - 4.8 / math.sqrt(123.04)
    assert [r["x"] for r in rows[:3]] == pytest.approx([3.0, 2.4, x3], rel=1e-9)
    assert [r["G"] for r in rows[:3]] == pytest.approx([64.0, 100.0, 123.04], rel=1e-9)
    assert [r["eff_lr"] for r in rows[:2]] == pytest.approx([0.125, 0.1], rel=1e-9)
    # ...and as printed (4 significant digits; G to 2 decimals).
    lines = capsys.readouterr().out.splitlines()
    table = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [t[:4] for t in table[:3]] == [
        ["1", "3.000", "8.000", "64.00"],
        ["2", "2.400", "6.000", "100.00"],
        ["3", "1.967", "4.800", "123.04"],
    ]
    assert len(table) == 10
    assert_png(result["png"], tmp_path / "x_squared.png")


def test_x_squared_runs_as_a_script(tmp_path):
    """`python examples/x_squared.py --out DIR`: the way a reader runs it (`_common` import too)."""
    script = str(EXAMPLES / "x_squared.py")
    out = run_python("", args=(script, "--steps", "3", "--out", str(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "   3     1.967      4.800    123.04" in out.stdout
    assert_png(tmp_path / "x_squared.png", tmp_path / "x_squared.png")


# --- ravine.py --------------------------------------------------------------------------------

def test_ravine(monkeypatch, tmp_path):
    mod = load_example("ravine", monkeypatch)
    result = mod.main(["--out", str(tmp_path)])
    paths = result["paths"]
    assert set(paths) == {"SGD", "Momentum", "AdaGrad"}
    for name, path in paths.items():
        assert path.shape == (46, 2), name
        assert tuple(path[0]) == (-7.0, 2.0), name
        distance = float(np.hypot(*path[-1]))
        assert result["final_distance"][name] == pytest.approx(distance, rel=1e-15)

    # SGD on this quadratic has a closed form: x_t = -7 (1 - 0.95/10)^t, y_t = 2 (1 - 2*0.95)^t.
    t = np.arange(46)
    np.testing.assert_allclose(paths["SGD"][:, 0], -7.0 * 0.905**t, rtol=1e-12)
    np.testing.assert_allclose(paths["SGD"][:, 1], 2.0 * (-0.9) ** t, rtol=1e-12, atol=1e-15)

    ada = paths["AdaGrad"]
    # AdaGrad's first step is lr * sign(grad) per coordinate (up to eps = 1e-7).
    np.testing.assert_allclose(ada[1], [-7.0 + 0.9, 2.0 - 0.9], rtol=1e-6)
    # It damps the steep direction without zig-zagging: y never changes sign (SGD's flips every
    # step) and is below 1e-8 after 45 steps; it then creeps along x.
    assert np.all(ada[:, 1] > 0)
    assert np.all(np.sign(paths["SGD"][1:, 1]) != np.sign(paths["SGD"][:-1, 1]))
    assert abs(ada[-1, 1]) < 1e-8
    assert np.all(np.diff(ada[:, 0]) > 0)  # monotone progress along the ravine floor

    # Measured final distances to (0, 0): SGD 0.0803, Momentum 0.7065, AdaGrad 0.4987.
    d = result["final_distance"]
    assert d["AdaGrad"] < 0.5
    assert d["AdaGrad"] == pytest.approx(0.49871, abs=1e-4)
    assert d["SGD"] == pytest.approx(0.08031, abs=1e-4)
    assert d["Momentum"] == pytest.approx(0.70647, abs=1e-4)
    assert_png(result["png"], tmp_path / "ravine.png")


# --- diabetes_regression.py -------------------------------------------------------------------

@pytest.fixture
def diabetes(monkeypatch) -> ModuleType:
    pytest.importorskip("sklearn", reason=f"scikit-learn not installed; {EXTRAS}")
    return load_example("diabetes_regression", monkeypatch)


def sklearn_test_mse() -> float:
    """Closed-form least squares on the same split (scaling features does not change its fit)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=42)
    pred = LinearRegression().fit(X_tr, y_tr).predict(X_te)
    return float(np.mean((pred - y_te) ** 2))


def test_diabetes_regression(diabetes, tmp_path, capsys):
    result = diabetes.main(["--out", str(tmp_path)])
    loss = result["train_loss"]
    assert loss.shape == (101,)
    # From w = 0 on the standardised target the first prediction is the training mean, so the
    # starting loss is the training variance of the target (measured: 6076.40).
    assert loss[0] == pytest.approx(6076.40, abs=0.01)
    assert np.all(np.diff(loss) <= 0)  # full-batch AdaGrad at lr = 0.1: decreases every epoch
    assert loss[10] < 0.5 * loss[0]
    # It cannot beat the least-squares optimum on the training data, and ends within 1% of it
    # (measured: 2888.56 vs 2868.55).
    assert result["closed_form_train_mse"] <= loss[-1] < 1.01 * result["closed_form_train_mse"]

    closed = sklearn_test_mse()  # 2900.19
    assert result["closed_form_test_mse"] == pytest.approx(closed, rel=1e-9)
    # Measured test MSE after 100 epochs: 2888.92, ratio 0.996 to the closed form.
    assert 0.98 * closed < result["test_mse"] < 1.02 * closed
    out = capsys.readouterr().out
    assert "epoch  100  train MSE    2888.56" in out
    assert "test MSE: AdaGrad 2888.92, least-squares closed form 2900.19" in out
    assert_png(result["png"], tmp_path / "diabetes_loss.png")


def test_diabetes_raw_target_is_slow(diabetes, tmp_path):
    """The documented reason for standardising the target: with the raw one (mean ~154) the
    same lr barely moves the loss (measured after 100 epochs: test MSE 8.85x the closed form)."""
    result = diabetes.main(["--raw-target", "--epochs", "20", "--out", str(tmp_path)])
    loss = result["train_loss"]
    assert np.all(np.diff(loss) < 0)
    assert loss[-1] > 0.95 * loss[0]
    assert result["test_mse"] > 5 * result["closed_form_test_mse"]
