"""Compiled kernels against their NumPy twins, byte for byte, driven by the kernel registry."""

from __future__ import annotations

import numpy as np
import pytest

import fastadagrad
from fastadagrad._backend import _kernels
from fastadagrad._registry import DTYPES, KERNELS, SIZES
from _helpers import assert_same_bits

ISAS = _kernels.isa_available() if _kernels is not None else ()
KERNEL_NAMES = sorted(KERNELS)
#: (kernel name, dtype) pairs: each kernel with the dtypes it accepts (the registry says which)
KERNEL_DTYPES = [(name, dtype) for name in KERNEL_NAMES for dtype in KERNELS[name].dtypes]
KERNEL_DTYPE_IDS = [f"{name}-{np.dtype(dtype).name}" for name, dtype in KERNEL_DTYPES]


def run_both(kernel, inputs, options):
    """Run the compiled and the NumPy function on copies of `inputs`; return both output dicts."""
    fast_in = {k: v.copy(order="K") for k, v in inputs.items()}
    slow_in = {k: v.copy(order="K") for k, v in inputs.items()}
    with np.errstate(all="ignore"):
        kernel.fast(*fast_in.values(), **options)
        kernel.slow(*slow_in.values(), **options)
    return fast_in, slow_in


def check_kernel(kernel, inputs, options, what):
    fast_out, slow_out = run_both(kernel, inputs, options)
    for name in kernel.outputs:
        assert_same_bits(fast_out[name], slow_out[name], f"{kernel.name} {what} `{name}` {options}")
    # The outputs really changed (a no-op kernel must not pass as "equal"), unless there was
    # nothing to do (an empty array or an empty batch).
    if all(v.size for v in inputs.values()):
        assert not np.array_equal(fast_out[kernel.outputs[0]], inputs[kernel.outputs[0]])


@pytest.mark.parametrize(("name", "dtype"), KERNEL_DTYPES, ids=KERNEL_DTYPE_IDS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("isa", ISAS)
def test_sizes_and_isas(compiled, restore_isa, name, dtype, size, isa):
    compiled.set_isa(isa)
    kernel = KERNELS[name]
    rng = np.random.default_rng(size)
    inputs = kernel.make_inputs(rng, (size,), dtype)
    check_kernel(kernel, inputs, kernel.options[0], f"{isa} n={size}")
    check_kernel(kernel, inputs, kernel.options[-1], f"{isa} n={size}")


@pytest.mark.parametrize(("name", "dtype"), KERNEL_DTYPES, ids=KERNEL_DTYPE_IDS)
@pytest.mark.parametrize("size", (1, 17, 1000, 40_000))
def test_every_option_combination(compiled, name, dtype, size):
    kernel = KERNELS[name]
    rng = np.random.default_rng(size + 1)
    inputs = kernel.make_inputs(rng, (size,), dtype)
    assert len(kernel.options) >= 8   # every combination of the kernel's switches
    for options in kernel.options:
        check_kernel(kernel, inputs, options, f"n={size}")


def layouts(rng, dtype):
    """(label, param, grad, accum) over shapes and memory orders the user actually has."""
    def three(shape, order="C"):
        p, g, a = [np.asarray(rng.standard_normal(shape), dtype=dtype, order=order) for _ in range(3)]
        np.abs(a, out=a)
        return p, g, a

    p, g, a = three(())
    yield "0-d", p, g, a
    p, g, a = three((0, 3))
    yield "empty 2-d", p, g, a
    p, g, a = three((7, 33, 5))
    yield "3-d C", p, g, a
    p, g, a = three((7, 33, 5), order="F")
    yield "3-d Fortran", p, g, a
    p, g, a = three((40, 90))
    yield "transposed", p.T, g.T, a.T
    yield "column slice", p[:, 1::3], g[:, 1::3], a[:, 1::3]
    yield "negative stride", p[::-1, ::-2], g[::-1, ::-2], a[::-1, ::-2]
    p, g, a = three((300, 301))
    yield "mixed orders", p, np.asfortranarray(g), a[:, :].copy(order="F")
    big = three((2, 70_000))
    yield "large strided (nogil, 2 runs)", big[0][:, ::2], big[1][:, ::2], big[2][:, ::2]
    buf = rng.standard_normal(2 * 5000).astype(dtype)
    np.abs(buf[1::2], out=buf[1::2])
    yield "interleaved param/accum", buf[::2], rng.standard_normal(5000).astype(dtype), buf[1::2]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_views_are_updated_in_place(compiled, dtype, backend_name):
    """Non-contiguous views: the caller's memory changes (no temporary copy) and equals a
    contiguous reference computed on copies."""
    rng = np.random.default_rng(7)
    options = dict(lr=0.1, eps=1e-6, weight_decay=0.01)
    for label, p, g, a in layouts(rng, dtype):
        ref_p, ref_a = np.array(p, order="C"), np.array(a, order="C")
        fastadagrad.reference.adagrad_update(ref_p, np.array(g, order="C"), ref_a, **options)
        before_p = p.copy()
        with fastadagrad.backend(backend_name):
            assert fastadagrad.adagrad_update(p, g, a, **options) is None
        assert_same_bits(p, ref_p, f"{label} param")
        assert_same_bits(a, ref_a, f"{label} accum")
        if p.size:
            assert not np.array_equal(p, before_p), label


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_unaligned_and_byteswapped_views(compiled, dtype):
    """Memory the C loops cannot address directly goes to the NumPy twin, still in place."""
    rng = np.random.default_rng(3)
    n = 1000
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(3 * n * itemsize + 3, dtype=np.uint8)
    unaligned = [raw[1 + k * n * itemsize: 1 + (k + 1) * n * itemsize].view(dtype) for k in range(3)]
    assert not unaligned[0].flags.aligned
    swapped = [np.zeros(n, dtype=np.dtype(dtype).newbyteorder()) for _ in range(3)]
    for arrays in (unaligned, swapped):
        arrays[0][...] = rng.standard_normal(n)
        arrays[1][...] = rng.standard_normal(n)
        arrays[2][...] = np.abs(rng.standard_normal(n))
        ref = [np.array(x, dtype=dtype) for x in arrays]
        fastadagrad.reference.adagrad_update(ref[0], ref[1], ref[2], lr=0.1)
        fastadagrad.adagrad_update(arrays[0], arrays[1], arrays[2], lr=0.1)
        assert_same_bits(np.array(arrays[0], dtype=dtype), ref[0], "param")
        assert_same_bits(np.array(arrays[2], dtype=dtype), ref[2], "accum")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nan_and_inf_propagate_identically(compiled, dtype):
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, 5e-324, 1e38, 1e308, 1.0, -3.0])
    rng = np.random.default_rng(11)
    n = 2000
    with np.errstate(over="ignore"):  # 1e308 -> inf in float32 on purpose
        inputs = {
            "param": rng.choice(specials, n).astype(dtype),
            "grad": rng.choice(specials, n).astype(dtype),
            "accum": np.abs(rng.choice(specials, n)).astype(dtype),
        }
    for options in KERNELS["adagrad_update"].options:
        fast_out, slow_out = run_both(KERNELS["adagrad_update"], inputs, options)
        for name in ("param", "accum"):
            assert_same_bits(fast_out[name], slow_out[name], f"{name} {options}")
        assert np.isnan(fast_out["param"]).any()  # the specials really reached the output


def all_option_switches():
    """Every combination of the loop's switches, including the optimizer-only ones
    (Keras' decoupled weight decay, optax's zero mask), as DenseOptions."""
    import itertools
    from fastadagrad._validation import DenseOptions
    for maximize, wd, inside, dwd, zero in itertools.product(
            (False, True), (0.0, 0.05), (False, True), (0.0, 0.01), (False, True)):
        yield DenseOptions(clr=0.1, eps=1e-6, weight_decay=wd, maximize=maximize,
                           eps_inside=inside, decoupled_weight_decay=dwd, zero_if_accum_zero=zero)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_every_switch_with_special_values(compiled, restore_isa, dtype, isa, layout):
    """All 32 switch combinations x special values (signed zeros, subnormals, inf, NaN, zero
    accumulators) x every ISA, contiguous and strided loops, against the NumPy twin."""
    compiled.set_isa(isa)
    specials = np.array([0.0, -0.0, 0.0, np.nan, np.inf, -np.inf, 1e-45, 5e-324, 1e-300, 1e38,
                         1e308, 1.0, -3.0, 0.5])
    rng = np.random.default_rng(99)
    n = 1003
    with np.errstate(over="ignore"):
        base = {"param": rng.choice(specials, n).astype(dtype),
                "grad": rng.choice(specials, n).astype(dtype),
                "accum": np.abs(rng.choice(specials, n)).astype(dtype)}
    for opts in all_option_switches():
        fast = {k: v.copy() for k, v in base.items()}
        slow = {k: v.copy() for k, v in base.items()}
        if layout == "strided":
            fast = {k: np.repeat(v, 2)[::2] for k, v in fast.items()}
        compiled.update_validated(fast["param"], fast["grad"], fast["accum"], opts)
        with np.errstate(all="ignore"):
            fastadagrad.reference.update_validated(slow["param"], slow["grad"], slow["accum"], opts)
        for name in ("param", "accum"):
            assert_same_bits(np.ascontiguousarray(fast[name]), slow[name], f"{isa} {name} {opts}")
