"""Typing: py.typed and the .pyi stub ship with the package, and `mypy --strict` passes on a
small usage example (and on the package itself)."""

from __future__ import annotations

import os
import site
import textwrap

import pytest

import fastadagrad
from _helpers import run_python

pytest.importorskip("mypy", reason="mypy is not installed (it is part of the test extras)")

PKG = os.path.dirname(os.path.abspath(fastadagrad.__file__))

EXAMPLE = textwrap.dedent('''
    import numpy as np
    import numpy.typing as npt

    import fastadagrad
    from fastadagrad import AdaGrad, SparseGrad


    def train(params: list[npt.NDArray[np.float32]], steps: int) -> float:
        opt = AdaGrad(params, lr=0.1, convention="torch", nonfinite="skip")
        for _ in range(steps):
            applied: bool = opt.step([np.ones_like(p) for p in params])
            assert applied
        state = opt.state_dict()
        opt.load_state_dict(state)
        return float(params[0][0])


    def main() -> None:
        p = np.zeros(10, np.float32)
        a = np.zeros_like(p)
        fastadagrad.adagrad_update(p, np.ones_like(p), a, lr=0.5, eps_placement="inside", step=2)
        table = np.zeros((100, 8), np.float32)
        acc = np.zeros(100, np.float32)
        fastadagrad.sparse_adagrad_update(table, acc, np.array([1, 2]), np.ones((2, 8), np.float32))
        with fastadagrad.backend("numpy"):
            x: float = train([np.zeros(3, np.float32)], 2)
        old: int = fastadagrad.set_num_threads(1)
        isa: str = fastadagrad.get_isa()
        views, arena = fastadagrad.pack([np.zeros(3), np.zeros(4)])
        opt = AdaGrad({"w": views[0], "b": views[1]}, packed=True)
        opt.step({"w": np.ones(3), "b": np.ones(4)})
        emb = AdaGrad([{"params": [table], "rowwise": True}])
        emb.step([[SparseGrad(np.array([3]), np.ones((1, 8), np.float32))]])
        include: str = fastadagrad.get_include()
        print(x, old, isa, arena.size, include, fastadagrad.show_config()["backend"])


    main()
''')


def mypy_strict(tmp_path, *args: str):
    """Run `mypy --strict ARGS` in tmp_path against the fastadagrad the tests import: an
    installed one is found in site-packages (pointing MYPYPATH there would make mypy refuse
    it as shadowing), an in-place build through MYPYPATH."""
    parent = os.path.dirname(PKG)
    installed = {os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
    env = {} if os.path.realpath(parent) in installed else {"MYPYPATH": parent}
    return run_python("", args=("-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"))
                      + args, cwd=str(tmp_path), env=env)


def test_typing_files_ship_with_the_package():
    assert os.path.exists(os.path.join(PKG, "py.typed"))
    assert os.path.exists(os.path.join(PKG, "kernels.pyi"))
    assert os.path.exists(os.path.join(PKG, "kernels.pxd"))


def test_mypy_strict_on_a_usage_example(tmp_path):
    (tmp_path / "usage.py").write_text(EXAMPLE)
    out = mypy_strict(tmp_path, "usage.py")
    assert out.returncode == 0, out.stdout + out.stderr
    ran = run_python("", args=("usage.py",), cwd=str(tmp_path))   # and it runs
    assert ran.returncode == 0, ran.stderr


def test_mypy_strict_on_the_package(tmp_path):
    # fastadagrad.torch and the bench's plot are typed against these peers' own annotations.
    pytest.importorskip("torch", reason="torch is not installed: mypy checks fastadagrad.torch "
                                        "against torch's types (pip install torch==2.13.0)")
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: mypy checks the "
                                             "bench's plot against its types")
    out = mypy_strict(tmp_path, "-p", "fastadagrad")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "source files" in out.stdout   # it really checked the package
