"""Backend selection: environment variable, set/get, context manager, fallback with warning."""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastadagrad
from _helpers import REQUIRE_COMPILED, run_python


def test_compiled_backend_active_when_required():
    """In CI (FASTADAGRAD_REQUIRE_COMPILED=1) the default backend must be the compiled one."""
    if not REQUIRE_COMPILED:
        pytest.skip("FASTADAGRAD_REQUIRE_COMPILED is not set (only CI requires the extension)")
    expected = "numpy" if os.environ.get("FASTADAGRAD_BACKEND", "").lower() == "numpy" else "cython"
    assert fastadagrad.compiled_available()
    assert fastadagrad.get_backend() == expected
    assert fastadagrad.get_isa() in ("avx512", "avx2", "generic")


def test_set_get_and_context_manager(compiled):
    # The `compiled` fixture selects the compiled backend for the test.
    assert fastadagrad.get_backend() == "cython"
    with fastadagrad.backend("numpy"):
        assert fastadagrad.get_backend() == "numpy"
        with fastadagrad.backend("cython"):
            assert fastadagrad.get_backend() == "cython"
        assert fastadagrad.get_backend() == "numpy"
    assert fastadagrad.get_backend() == "cython"
    with pytest.raises(ValueError, match="`name` must be one of"):
        fastadagrad.set_backend("fortran")


def test_set_backend_persists_and_is_restored_by_fixture(compiled):
    fastadagrad.set_backend("numpy")
    assert fastadagrad.get_backend() == "numpy"


def test_context_manager_restores_after_error(compiled):
    with pytest.raises(RuntimeError):
        with fastadagrad.backend("numpy"):
            raise RuntimeError("boom")
    assert fastadagrad.get_backend() == "cython"


def test_numpy_backend_really_runs_numpy(compiled, monkeypatch):
    """With the numpy backend selected, the public function goes through the NumPy twin."""
    calls = []
    real = fastadagrad.reference.update_validated
    monkeypatch.setattr(fastadagrad.reference, "update_validated",
                        lambda *a: (calls.append(1), real(*a)))
    p, g, a = np.ones(10), np.ones(10), np.ones(10)
    with fastadagrad.backend("numpy"):
        fastadagrad.adagrad_update(p, g, a)
    assert calls == [1]
    fastadagrad.adagrad_update(p, g, a)
    assert calls == [1]  # the compiled path does not touch the twin


@pytest.mark.parametrize("env, expected", [("numpy", "numpy"), ("cython", "cython"), ("NumPy", "numpy")])
def test_environment_variable(compiled, env, expected, tmp_path):
    out = run_python("import warnings; warnings.simplefilter('error'); import fastadagrad; "
                     "print(fastadagrad.get_backend())", env={"FASTADAGRAD_BACKEND": env},
                     cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


BLOCK_EXTENSION = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'fastadagrad.kernels': raise ImportError('blocked for the test')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_fallback_warns_when_extension_missing(tmp_path):
    code = BLOCK_EXTENSION + (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastadagrad, numpy as np\n"
        "print(fastadagrad.get_backend(), fastadagrad.get_isa(), len(w), w and w[0].category.__name__)\n"
        "p, g, a = np.ones(3), np.ones(3), np.ones(3)\n"
        "fastadagrad.adagrad_update(p, g, a, lr=1.0)\n"
        "print(p.tolist())\n"
    )
    out = run_python(code, env={"FASTADAGRAD_BACKEND": ""}, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "numpy none 1 RuntimeWarning"
    expected = float(1.0 - 1.0 / (np.sqrt(2.0) + 1e-10))
    assert second == str([expected] * 3)


def test_no_warning_when_numpy_requested_and_extension_missing(tmp_path):
    code = BLOCK_EXTENSION + (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "import fastadagrad\n"
        "print(fastadagrad.get_backend())\n"
    )
    out = run_python(code, env={"FASTADAGRAD_BACKEND": "numpy"}, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"


def test_selecting_cython_without_extension_is_an_error(tmp_path):
    code = BLOCK_EXTENSION + (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import fastadagrad\n"
        "try:\n"
        "    fastadagrad.set_backend('cython')\n"
        "except ValueError as e:\n"
        "    print('ValueError', 'not available' in str(e))\n"
    )
    out = run_python(code, cwd=str(tmp_path))
    assert out.stdout.strip() == "ValueError True", out.stderr


def test_isa_paths(compiled, restore_isa):
    available = compiled.isa_available()
    assert "generic" in available
    assert fastadagrad.get_isa() == available[0] or fastadagrad.get_isa() in available
    for isa in available:
        compiled.set_isa(isa)
        assert fastadagrad.get_isa() == isa
    with pytest.raises(ValueError, match="`name` must be one of"):
        compiled.set_isa("sse9")


def test_isa_environment_override(compiled, tmp_path):
    out = run_python("import fastadagrad; print(fastadagrad.get_isa())",
                     env={"FASTADAGRAD_ISA": "generic"}, cwd=str(tmp_path))
    assert out.stdout.strip() == "generic", out.stderr


def _finiteness_cases():
    """(name, array): float32/float64 C-contiguous (the C scan) around SIMD widths and with
    the bad element first, in the middle or last; views, other dtypes and 0-d (NumPy)."""
    cases = []
    for dtype in (np.float32, np.float64):
        for n in (0, 1, 7, 8, 9, 16, 17, 33, 1000):
            cases.append((f"{np.dtype(dtype).name}[{n}] finite", np.linspace(-1e30, 1e30, n)
                          .astype(dtype)))
            for bad in (np.nan, np.inf, -np.inf):
                for at in sorted({0, n // 2, n - 1}) if n else ():
                    x = np.ones(n, dtype)
                    x[at] = bad
                    cases.append((f"{np.dtype(dtype).name}[{n}] {bad} at {at}", x))
        sub = np.full(10, 5e-324 if dtype is np.float64 else 1e-45, dtype)   # denormals
        cases.append((f"{np.dtype(dtype).name} denormals", sub))
        big = np.full(10, np.finfo(dtype).max, dtype)
        cases.append((f"{np.dtype(dtype).name} max", big))
        two_d = np.ones((6, 5), dtype)
        two_d[5, 4] = np.nan
        cases.append((f"{np.dtype(dtype).name} (6, 5) nan last", two_d))
        cases.append((f"{np.dtype(dtype).name} strided view hiding the nan", two_d[::2, ::2]))
        cases.append((f"{np.dtype(dtype).name} transposed", two_d.T))
        cases.append((f"{np.dtype(dtype).name} byte-swapped nan",
                      two_d.astype(np.dtype(dtype).newbyteorder())))
    cases.append(("float16 inf", np.array([1, np.inf], np.float16)))
    cases.append(("int64", np.arange(5)))
    cases.append(("0-d nan", np.array(np.nan)))
    cases.append(("0-d finite", np.array(2.0, np.float32)))
    return cases


@pytest.mark.parametrize("name, x", _finiteness_cases(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_all_finite_matches_numpy_on_both_backends(compiled, name, x):
    """Backend.all_finite (the optimizer's finiteness check of SparseGrad values) is
    np.isfinite(x).all(), whichever backend and whatever the layout."""
    want = bool(np.isfinite(x).all())
    before = x.tobytes()
    for backend in fastadagrad._backend.available():
        got = backend.all_finite(x)
        assert type(got) is bool and got == want, (backend, name)
    assert x.tobytes() == before


def test_data_address_is_the_array_interface_address(compiled):
    """_backend.data_address (the optimizer's layout check) gives __array_interface__'s
    address for contiguous arrays, views at an offset, negative strides and empty arrays, and
    refuses what is not an array."""
    base = np.arange(24.0).reshape(4, 6)
    for a in (base, base[1:, 2:], base[::-1], base[:, ::-2], base[:0], np.float32(1.0) * np.ones(0),
              base.T, np.array(3.0)):
        want = a.__array_interface__["data"][0]
        assert fastadagrad._backend.data_address(a) == want
        assert compiled.data_address(a) == want
    with pytest.raises(TypeError, match="NumPy array"):
        compiled.data_address([1.0])
