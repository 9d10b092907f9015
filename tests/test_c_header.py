"""The C API (fastadagrad/fastadagrad.h) used from outside: build, in a temporary directory, a
plain C-API extension and a C++ pybind11 one (sources in tests/c_embed/) that call the kernels
through the header, and compare their bytes with the Python API; an extension built against an
older, smaller table still works; one built against a newer header gets a clean ImportError."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import ContextManager, Iterator

import numpy as np
import pytest

import fastadagrad
from fastadagrad._backend import _kernels
from _helpers import half_dtype, built_in_place, run_python

pytestmark = pytest.mark.skipif(_kernels is None, reason="compiled extension not built")

SOURCES = Path(__file__).resolve().parent / "c_embed"

SETUP = textwrap.dedent('''
    import sys
    import fastadagrad
    from setuptools import Extension, setup
    inc = [fastadagrad.get_include()]
    if sys.argv[1] == "c":
        exts = [Extension(name, [name + ".c"], include_dirs=inc)
                for name in ("fa_c_embed", "fa_c_old", "fa_c_future")]
    else:
        import pybind11
        exts = [Extension("fa_pybind", ["fa_pybind.cpp"], language="c++",
                          include_dirs=inc + [pybind11.get_include()],
                          extra_compile_args=["-std=c++17"])]
    setup(name="fa_embed_" + sys.argv[1], ext_modules=exts,
          script_args=["build_ext", "--inplace"])
''')


def _built(directory: Path, kind: str) -> ContextManager[Path]:
    """Build the `kind` ("c" or "cxx") extensions in `directory`, importable while inside."""
    files = {src.name: src.read_text() for src in SOURCES.iterdir()}
    files["setup.py"] = SETUP
    return built_in_place(directory, files, kind)


@pytest.fixture(scope="module")
def c_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with _built(tmp_path_factory.mktemp("c_embed"), "c") as d:
        yield d


@pytest.fixture(scope="module")
def c_embed(c_dir: Path):  # type: ignore[no-untyped-def]
    import fa_c_embed
    return fa_c_embed


@pytest.fixture(scope="module")
def pybind_ext(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("pybind11", reason="pybind11 is not installed (pip install pybind11; it "
                                           "builds the C++ embedding test)")
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler available to build the pybind11 extension")
    with _built(tmp_path_factory.mktemp("pybind_embed"), "cxx"):
        import fa_pybind
        yield fa_pybind


def _data(n: int, dtype: type, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    return p, g, np.abs(rng.standard_normal(n)).astype(dtype)


OPTIONS = [dict(), dict(eps_placement="inside", weight_decay=0.01, lr_decay=0.1, step=4,
                        maximize=True)]


def _c_args(options: dict) -> tuple:  # type: ignore[type-arg]
    return (0.1, 1e-6, options.get("eps_placement") == "inside", options.get("weight_decay", 0.0),
            options.get("lr_decay", 0.0), options.get("step", 1), options.get("maximize", False))


def test_the_table_is_the_header_version(c_embed) -> None:  # type: ignore[no-untyped-def]
    version, size, header_size = c_embed.abi()
    assert version == _kernels._c_api_addresses()["abi_version"] == 2
    assert size == header_size   # built from this very header


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 1000, 70_001])
@pytest.mark.parametrize("options", OPTIONS)
def test_dense_from_c_and_cpp_equals_python_api(compiled, c_embed, pybind_ext, dtype, n,
                                                 options) -> None:  # type: ignore[no-untyped-def]
    p, g, a = _data(n, dtype, n)
    expected_p, expected_a = p.copy(), a.copy()
    fastadagrad.adagrad_update(expected_p, g, expected_a, lr=0.1, eps=1e-6, **options)
    assert expected_p.tobytes() != p.tobytes()   # the update really changes something
    for ext in (c_embed, pybind_ext):
        p2, a2 = p.copy(), a.copy()
        ext.dense(p2, g, a2, *_c_args(options))
        assert p2.tobytes() == expected_p.tobytes(), ext.__name__
        assert a2.tobytes() == expected_a.tobytes(), ext.__name__


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_and_nonfinite_scan_from_c(compiled, c_embed, dtype) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(n).astype(dtype) for n in (40_000, 30_000, 5)]
    grads = [rng.standard_normal(x.size).astype(dtype) for x in arrays]
    accs = [np.zeros_like(x) for x in arrays]
    ref = [x.copy() for x in arrays]
    assert c_embed.multi(arrays, grads, accs, 0.1) == -1
    fastadagrad.AdaGrad(ref, lr=0.1).step(grads)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(arrays, ref))
    grads[1][7] = np.inf
    before = [x.copy() for x in arrays + accs]
    assert c_embed.multi(arrays, grads, accs, 0.1) == 1
    assert all(x.tobytes() == y.tobytes() for x, y in zip(arrays + accs, before))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rowwise", [False, True])
def test_sparse_from_c_and_cpp_equals_python_api(compiled, c_embed, pybind_ext, dtype,
                                                 rowwise) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    table = rng.standard_normal((100, 24)).astype(dtype)
    accum = np.zeros(100 if rowwise else (100, 24), dtype)
    idx = np.array([5, 9, 5, 0, 99, 9], dtype=np.int64)
    vals = rng.standard_normal((6, 24)).astype(dtype)
    t_ref, a_ref = table.copy(), accum.copy()
    fastadagrad.sparse_adagrad_update(t_ref, a_ref, idx, vals, lr=0.1)
    for ext in (c_embed, pybind_ext):
        t, a = table.copy(), accum.copy()
        assert ext.sparse(t, a, idx, vals, 0.1, rowwise) == 4, ext.__name__
        assert t.tobytes() == t_ref.tobytes() and a.tobytes() == a_ref.tobytes(), ext.__name__


def test_every_isa_and_thread_count_matches(compiled, c_embed, restore_threads,
                                            restore_isa) -> None:  # type: ignore[no-untyped-def]
    """The table holds the dispatchers: set_isa and set_num_threads apply to C callers too."""
    p, g, a = _data(100_003, np.float32, 1)
    ref_p, ref_a = p.copy(), a.copy()
    fastadagrad.reference.adagrad_update(ref_p, g, ref_a, lr=0.1, eps=1e-6)
    for isa in compiled.isa_available():
        compiled.set_isa(isa)
        for threads in (1, 2):
            fastadagrad.set_num_threads(threads)
            p2, a2 = p.copy(), a.copy()
            c_embed.dense(p2, g, a2, *_c_args({}))
            assert p2.tobytes() == ref_p.tobytes() and a2.tobytes() == ref_a.tobytes(), (isa, threads)


def test_an_extension_built_for_a_smaller_older_table_still_works(compiled, c_dir) -> None:  # type: ignore[no-untyped-def]
    import fa_c_old
    p, g, a = _data(1000, np.float32, 5)
    expected_p, expected_a = p.copy(), a.copy()
    fastadagrad.adagrad_update(expected_p, g, expected_a, lr=0.1)
    fa_c_old.dense_f32(p, g, a, 0.1)
    assert p.tobytes() == expected_p.tobytes() and a.tobytes() == expected_a.tobytes()


def test_an_extension_built_for_a_newer_version_gets_a_clean_import_error(c_dir) -> None:  # type: ignore[no-untyped-def]
    """In a subprocess, so that a crash would show as a failure instead of killing pytest."""
    out = run_python(textwrap.dedent("""
        try:
            import fa_c_future
        except ImportError as exc:
            print("ImportError:", exc)
        else:
            print("imported")
    """), cwd=str(c_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ImportError: this extension needs fastadagrad C API version 3"), out.stdout
    assert "provides version 2" in out.stdout and "upgrade fastadagrad" in out.stdout


@pytest.mark.parametrize("bf16", [False, True], ids=["float16", "bfloat16"])
def test_mixed_precision_from_c_equals_python_api(compiled, c_embed, bf16) -> None:  # type: ignore[no-untyped-def]
    """dense_mixed through the header: the bytes of adagrad_update on float16/bfloat16."""
    dtype = half_dtype(bf16)
    rng = np.random.default_rng(11)
    param = rng.standard_normal(1003).astype(dtype)
    grad = rng.standard_normal(1003).astype(np.float32)
    accum = np.full(1003, 0.1, np.float32)
    p_ref, a_ref = param.copy(), accum.copy()
    fastadagrad.adagrad_update(p_ref, grad, a_ref, lr=0.1)
    p, a = param.copy(), accum.copy()
    c_embed.mixed16(p.view(np.uint16), grad, a, bf16, 0.1)
    assert not np.array_equal(p.view(np.uint16), param.view(np.uint16))
    assert p.tobytes() == p_ref.tobytes() and a.tobytes() == a_ref.tobytes()


@pytest.mark.parametrize("bf16", [False, True], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("seed, step", [(0, 1), (2**64 - 1, 2**40 + 3)])
def test_stochastic_mixed_from_c_equals_python_api(compiled, c_embed, bf16, seed, step) -> None:  # type: ignore[no-untyped-def]
    """dense_mixed_sr (version 2) through the header: the bytes of adagrad_update(...,
    stochastic_rounding=True, seed=, step=), which differ from the nearest-even store."""
    dtype = half_dtype(bf16)
    rng = np.random.default_rng(12)
    param = (rng.standard_normal(1003) * 3).astype(dtype)
    grad = rng.standard_normal(1003).astype(np.float32)
    accum = np.full(1003, 0.1, np.float32)
    p_ref, a_ref, nearest = param.copy(), accum.copy(), param.copy()
    fastadagrad.adagrad_update(p_ref, grad, a_ref, lr=0.1, step=step, stochastic_rounding=True,
                               seed=seed)
    fastadagrad.adagrad_update(nearest, grad, accum.copy(), lr=0.1, step=step)
    assert p_ref.tobytes() != nearest.tobytes()
    p, a = param.copy(), accum.copy()
    c_embed.mixed16(p.view(np.uint16), grad, a, bf16, 0.1, seed, step)
    assert p.tobytes() == p_ref.tobytes() and a.tobytes() == a_ref.tobytes()
