"""The C-level API (fastadagrad/kernels.pxd) used from outside: build a small Cython extension
in a temporary directory that cimports it, run updates inside `with nogil:`, and compare the
bytes with the Python API (as scipy's test_extending does for cython_blas)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import fastadagrad
from fastadagrad._backend import _kernels
from _helpers import half_dtype, built_in_place

pytestmark = pytest.mark.skipif(_kernels is None, reason="compiled extension not built")

PYX = textwrap.dedent('''
    # cython: language_level=3, boundscheck=False, wraparound=False
    from libc.stdint cimport int64_t
    from fastadagrad.kernels cimport (DenseOpts, adagrad_options, adagrad_dense_f32,
        adagrad_dense_f64, adagrad_multi_f32, adagrad_first_nonfinite_f32, adagrad_sparse_f32,
        adagrad_dense_mixed, adagrad_dense_mixed_sr, MixedTypes, FA_DT_BF16, FA_DT_F16,
        FA_DT_F32)
    from libc.stdint cimport uint64_t

    def mixed16(unsigned short[::1] p, const float[::1] g, float[::1] a, float[::1] m,
                bint bf16, bint use_master, double lr):
        cdef DenseOpts o
        cdef MixedTypes t
        t.param = FA_DT_BF16 if bf16 else FA_DT_F16
        t.grad = FA_DT_F32
        t.accum = FA_DT_F32
        adagrad_options(&o, lr, 1e-10, False, 0.0, 0.0, 1, False)
        with nogil:
            adagrad_dense_mixed(p.shape[0], &p[0], &g[0], &a[0], &m[0] if use_master else NULL,
                                &t, &o)

    def mixed16_sr(unsigned short[::1] p, const float[::1] g, float[::1] a, float[::1] m,
                   bint bf16, bint use_master, double lr, double lr_decay, uint64_t seed,
                   long long step, int64_t index0):
        cdef DenseOpts o
        cdef MixedTypes t
        t.param = FA_DT_BF16 if bf16 else FA_DT_F16
        t.grad = FA_DT_F32
        t.accum = FA_DT_F32
        adagrad_options(&o, lr, 1e-10, False, 0.0, lr_decay, step, False)
        with nogil:
            adagrad_dense_mixed_sr(p.shape[0], &p[0], &g[0], &a[0],
                                   &m[0] if use_master else NULL, &t, &o, seed, step, index0)

    def dense32(float[::1] p, const float[::1] g, float[::1] a, double lr, double eps,
                bint inside, double wd, double lr_decay, long long step, bint maximize):
        cdef DenseOpts o
        adagrad_options(&o, lr, eps, inside, wd, lr_decay, step, maximize)
        with nogil:
            adagrad_dense_f32(p.shape[0], &p[0], &g[0], &a[0], &o)

    def dense64(double[::1] p, const double[::1] g, double[::1] a, double lr):
        cdef DenseOpts o
        adagrad_options(&o, lr, 1e-10, False, 0.0, 0.0, 1, False)
        with nogil:
            adagrad_dense_f64(p.shape[0], &p[0], &g[0], &a[0], &o)

    def multi32(float[::1] p1, float[::1] g1, float[::1] a1, float[::1] p2, float[::1] g2,
                float[::1] a2, double lr):
        cdef DenseOpts o
        cdef float* ps[2]
        cdef float* gs[2]
        cdef float* acs[2]
        cdef Py_ssize_t off[3]
        ps[0] = &p1[0]; ps[1] = &p2[0]; gs[0] = &g1[0]; gs[1] = &g2[0]
        acs[0] = &a1[0]; acs[1] = &a2[0]
        off[0] = 0; off[1] = p1.shape[0]; off[2] = p1.shape[0] + p2.shape[0]
        adagrad_options(&o, lr, 1e-10, False, 0.0, 0.0, 1, False)
        with nogil:
            bad = adagrad_first_nonfinite_f32(2, gs, off)
            if bad < 0:
                adagrad_multi_f32(2, ps, gs, acs, off, &o)
        return bad

    def sparse32(float[:, ::1] t, float[:, ::1] a, const int64_t[::1] idx,
                 const float[:, ::1] g, double lr):
        cdef DenseOpts o
        cdef Py_ssize_t nu
        adagrad_options(&o, lr, 1e-10, False, 0.0, 0.0, 1, False)
        with nogil:
            nu = adagrad_sparse_f32(&t[0, 0], &a[0, 0], False, t.shape[1], &idx[0],
                                    idx.shape[0], &g[0, 0], &o)
        return nu
''')

SETUP = textwrap.dedent('''
    import fastadagrad
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    setup(name="embedder", ext_modules=cythonize(
        [Extension("embedder", ["embedder.pyx"], include_dirs=[fastadagrad.get_include()])],
        include_path=[fastadagrad.get_include()], quiet=True),
        script_args=["build_ext", "--inplace"])
''')


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    files = {"embedder.pyx": PYX, "setup.py": SETUP}
    with built_in_place(tmp_path_factory.mktemp("embedder"), files):
        import embedder
        yield embedder


@pytest.mark.parametrize("n", [1, 17, 1000, 70_001])
@pytest.mark.parametrize("options", [dict(), dict(eps_placement="inside", weight_decay=0.01,
                                                  lr_decay=0.1, step=4, maximize=True)])
def test_dense_from_cython_equals_python_api(compiled, embedder, n, options):
    rng = np.random.default_rng(n)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    a = np.abs(rng.standard_normal(n)).astype(np.float32)
    p2, a2, p0 = p.copy(), a.copy(), p.copy()
    embedder.dense32(p, g, a, 0.1, 1e-6, options.get("eps_placement") == "inside",
                     options.get("weight_decay", 0.0), options.get("lr_decay", 0.0),
                     options.get("step", 1), options.get("maximize", False))
    fastadagrad.adagrad_update(p2, g, a2, lr=0.1, eps=1e-6, **options)
    assert p.tobytes() == p2.tobytes() and a.tobytes() == a2.tobytes()
    assert not np.array_equal(p, p0)   # it really ran


def test_float64_multi_and_sparse_from_cython(compiled, embedder):
    rng = np.random.default_rng(0)
    p, g, a = (rng.standard_normal(500) for _ in range(3))
    a = np.abs(a)
    p2, a2 = p.copy(), a.copy()
    embedder.dense64(p, g, a, 0.05)
    fastadagrad.adagrad_update(p2, g, a2, lr=0.05)
    assert p.tobytes() == p2.tobytes()

    arrays = [rng.standard_normal(n).astype(np.float32) for n in (40_000, 30_000)]
    grads = [rng.standard_normal(x.size).astype(np.float32) for x in arrays]
    accs = [np.zeros_like(x) for x in arrays]
    ref = [x.copy() for x in arrays]
    assert embedder.multi32(arrays[0], grads[0], accs[0], arrays[1], grads[1], accs[1], 0.1) == -1
    opt = fastadagrad.AdaGrad(ref, lr=0.1)
    opt.step(grads)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(arrays, ref))
    grads[1][7] = np.nan
    before = [x.copy() for x in arrays]
    assert embedder.multi32(arrays[0], grads[0], accs[0], arrays[1], grads[1], accs[1], 0.1) == 1
    assert all(x.tobytes() == y.tobytes() for x, y in zip(arrays, before))

    t = rng.standard_normal((100, 16)).astype(np.float32)
    ta = np.zeros_like(t)
    idx = np.array([5, 9, 5, 0], dtype=np.int64)
    vals = rng.standard_normal((4, 16)).astype(np.float32)
    t2, ta2 = t.copy(), ta.copy()
    assert embedder.sparse32(t, ta, idx, vals, 0.1) == 3
    fastadagrad.sparse_adagrad_update(t2, ta2, idx, vals, lr=0.1)
    assert t.tobytes() == t2.tobytes() and ta.tobytes() == ta2.tobytes()


def test_threads_and_isa_follow_the_python_settings(compiled, embedder, restore_threads, restore_isa):
    """The embedded call goes through the same dispatch: every ISA path and thread count."""
    rng = np.random.default_rng(1)
    n = 100_003
    base = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    np.abs(base[2], out=base[2])
    ref_p, ref_a = base[0].copy(), base[2].copy()
    fastadagrad.reference.adagrad_update(ref_p, base[1], ref_a, lr=0.1)
    for isa in compiled.isa_available():
        compiled.set_isa(isa)
        for threads in (1, 2):
            fastadagrad.set_num_threads(threads)
            p, a = base[0].copy(), base[2].copy()
            embedder.dense32(p, base[1], a, 0.1, 1e-10, False, 0.0, 0.0, 1, False)
            assert p.tobytes() == ref_p.tobytes(), (isa, threads)


@pytest.mark.parametrize("bf16", [False, True], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("use_master", [False, True])
def test_mixed_precision_from_cython(compiled, embedder, bf16, use_master):
    """adagrad_dense_mixed: the bytes of adagrad_update on float16/bfloat16 params."""
    dtype = half_dtype(bf16)
    rng = np.random.default_rng(3)
    n = 70_001
    m = rng.standard_normal(n).astype(np.float32)
    p = m.astype(dtype)
    g = rng.standard_normal(n).astype(np.float32)
    a = np.abs(rng.standard_normal(n)).astype(np.float32)
    p2, a2, m2, p0 = p.copy(), a.copy(), m.copy(), p.copy()
    embedder.mixed16(p.view(np.uint16), g, a, m, bf16, use_master, 0.1)
    fastadagrad.adagrad_update(p2, g, a2, lr=0.1, master=m2 if use_master else None)
    assert p.tobytes() == p2.tobytes() and a.tobytes() == a2.tobytes()
    assert m.tobytes() == m2.tobytes()
    assert p.tobytes() != p0.tobytes()   # it really ran


@pytest.mark.parametrize("bf16", [False, True], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("use_master", [False, True])
@pytest.mark.parametrize("seed, step", [(0, 1), (12345, 7), (2**64 - 1, 2**40 + 3)])
def test_stochastic_mixed_from_cython(compiled, embedder, restore_threads, restore_isa, bf16,
                                      use_master, seed, step):
    """adagrad_dense_mixed_sr: the bytes of adagrad_update(..., stochastic_rounding=True,
    seed=, step=) on every ISA path and 1 and 2 threads; a call on the two halves of the param
    with index0 = 0 and n // 2 gives the bytes of the whole call."""
    dtype = half_dtype(bf16)
    decay = 0.01 if step < 100 else 0.0   # a huge step with decay would leave nothing to round
    rng = np.random.default_rng(seed % 1000 + step % 1000)
    n = 70_001
    m0 = (rng.standard_normal(n) * 3).astype(np.float32)
    p0 = m0.astype(dtype)
    g = rng.standard_normal(n).astype(np.float32)
    a0 = np.abs(rng.standard_normal(n)).astype(np.float32)
    want_p, want_a, want_m = p0.copy(), a0.copy(), m0.copy()
    fastadagrad.adagrad_update(want_p, g, want_a, lr=0.1, lr_decay=decay, step=step,
                               master=want_m if use_master else None, stochastic_rounding=True,
                               seed=seed)
    nearest = p0.copy()
    fastadagrad.adagrad_update(nearest, g, a0.copy(), lr=0.1, lr_decay=decay, step=step,
                               master=m0.copy() if use_master else None)
    assert want_p.tobytes() != nearest.tobytes()   # the stochastic store really differs
    h = n // 2
    for isa in compiled.isa_available():
        compiled.set_isa(isa)
        for threads in (1, 2):
            fastadagrad.set_num_threads(threads)
            p, a, m = p0.copy(), a0.copy(), m0.copy()
            embedder.mixed16_sr(p.view(np.uint16), g, a, m, bf16, use_master, 0.1, decay, seed,
                                step, 0)
            assert p.tobytes() == want_p.tobytes(), (isa, threads)
            assert a.tobytes() == want_a.tobytes() and m.tobytes() == (
                want_m if use_master else m0).tobytes()
            p, a, m = p0.copy(), a0.copy(), m0.copy()
            for lo, hi in ((0, h), (h, n)):
                embedder.mixed16_sr(p[lo:hi].view(np.uint16), g[lo:hi], a[lo:hi], m[lo:hi],
                                    bf16, use_master, 0.1, decay, seed, step, lo)
            assert p.tobytes() == want_p.tobytes(), (isa, threads, "halves")
