"""Shared test helpers (plain functions and constants; tests/conftest.py keeps the fixtures and
hooks): the byte-equality check, child processes importing the same fastadagrad, extensions
built against it, the examples.

FASTADAGRAD_REQUIRE_COMPILED=1 (set by .ci/run) turns a missing extension into a hard failure
instead of skipped compiled-vs-NumPy tests.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from subprocess import CompletedProcess
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest

import fastadagrad

REQUIRE_COMPILED = os.environ.get("FASTADAGRAD_REQUIRE_COMPILED") == "1"
# Set by .ci/run in the leg that installs the optional peers: a test skipped because a package
# "is not installed" then fails the run instead of hiding a missing install step.
REQUIRE_PEERS = os.environ.get("FASTADAGRAD_REQUIRE_PEERS") == "1"


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    """Identical bytes, except that a NaN's sign/payload bits are not compared: NaN must stand
    at exactly the same positions (IEEE 754 leaves the bits of a produced NaN open)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    nx, ny = np.isnan(x), np.isnan(y)
    if not np.array_equal(nx, ny):
        return False
    return np.ascontiguousarray(np.where(nx, 0, x)).tobytes() == np.ascontiguousarray(np.where(ny, 0, y)).tobytes()


def assert_same_bits(x: np.ndarray, y: np.ndarray, what: str = "") -> None:
    if not same_bits(x, y):
        x, y = np.asarray(x), np.asarray(y)
        detail = f"dtype {x.dtype}/{y.dtype}, shape {x.shape}/{y.shape}"
        if x.shape == y.shape and x.dtype == y.dtype:
            differ = ~((x.view(f"u{x.itemsize}") == y.view(f"u{y.itemsize}")) | (np.isnan(x) & np.isnan(y)))
            first = tuple(int(i[0]) for i in np.nonzero(np.atleast_1d(differ)))
            detail += f", {int(differ.sum())} elements differ, first at {first}"
            if x.ndim:
                detail += f": {x[first]!r} vs {y[first]!r}"
        raise AssertionError(f"{what}: arrays differ ({detail})")


def half_dtype(bf16: bool) -> np.dtype:
    """float16, or ml_dtypes.bfloat16 (the test is skipped, naming the package, without it)."""
    if not bf16:
        return np.dtype(np.float16)
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (bfloat16)")
    return np.dtype(ml_dtypes.bfloat16)


def same_package_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ plus `env`, with PYTHONPATH leading to the fastadagrad the tests import (an
    installed one or src/), for child processes."""
    import os

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastadagrad.__file__)))
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in [full_env.get("PYTHONPATH")] if p])
    full_env.update(env or {})
    return full_env


def run_python(code: str, env: dict[str, str] | None = None, cwd: str | None = None,
               args: tuple[str, ...] = ()) -> "CompletedProcess[str]":
    """Run `python -c code` (or `python -m ...` via args) importing the same fastadagrad as the
    tests do, with extra environment variables."""
    import os
    import subprocess
    import sys

    full_env = same_package_env(env)
    cmd = [sys.executable] + (list(args) if args else ["-c", code])
    return subprocess.run(cmd, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=600)


@contextlib.contextmanager
def built_in_place(directory: Path, files: dict[str, str], *setup_args: str) -> Iterator[Path]:
    """Write `files` (name -> text, a setup.py among them) into `directory`, run `python setup.py
    *setup_args` there against the fastadagrad the tests import, and keep `directory` on sys.path
    while inside (for the extensions built from outside: tests/test_c_api.py, test_c_header.py).
    Skips without a C compiler."""
    import shutil
    import sys

    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler available to build an extension that embeds fastadagrad")
    for name, text in files.items():
        (directory / name).write_text(text)
    out = run_python("", args=("setup.py",) + setup_args, cwd=str(directory))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sys.path.insert(0, str(directory))
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))


EXAMPLES_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> "ModuleType":
    """Import examples/<name>.py by path, as a fresh module (examples/ on sys.path for the
    scripts' shared examples/_common.py)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(EXAMPLES_DIR))
    spec = importlib.util.spec_from_file_location(f"fastadagrad_example_{name}",
                                                  EXAMPLES_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
