"""Stochastic rounding of float16 / bfloat16 stores (issue 15 §1, FBGEMM's
`stochastic_rounding`): the definition, and the NumPy twin of _csrc/half.h's `*_sr` functions.

A param's float32 result x is stored as one of its two neighbours in the storage dtype, the
one farther from zero with probability (distance to the nearer one) / (their gap), so the
stored value is x on average (no rounding bias: small updates are not lost). The random bits
come from a counter hash, not a generator with state:

    h(x)      = x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
                (32-bit unsigned arithmetic, wrapping)
    k0        = h(lo(seed) ^ h(hi(seed) ^ h(lo(step) ^ h(hi(step) ^ 0x5eed))))
    k1        = h(k0 ^ 0x9e3779b9)
    bits(i)   = h(h(lo(i) ^ k0) ^ hi(i) ^ k1)

where lo/hi are the low/high 32 bits of a 64-bit integer and i is the element's counter: its
C-order (row-major) index in the param, for a table row r, column c of a (N, D) table
r * D + c. So the result depends on (seed, step, element) only: reproducible, the same for
every thread count and ISA path, and in both backends.

bfloat16: r = bits(i) >> 16 is added to the float32 bits and the low 16 bits are dropped
(probability exact). float16, normal results: the top 13 random bits are added to the 13
dropped bits (exact); subnormal results (|x| < 2^-14): q = |x| * 2^24 rounds up when
(bits >> 8) < frac(q) * 2^24 (probability ceil(frac(q) * 2^24) / 2^24). Overflow to inf,
inf and NaN as in round-to-nearest. The accumulator's store (when it is float16/bfloat16)
stays round-to-nearest-even.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

_M32 = 0xFFFFFFFF
_U32 = np.uint32


def _h(x: int) -> int:
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def keys(seed: int, step: int) -> tuple[int, int]:
    """(k0, k1) of one call: the hash of (seed, step)."""
    k0 = _h((seed & _M32) ^ _h((seed >> 32) ^ _h((step & _M32) ^ _h((step >> 32) ^ 0x5EED))))
    return k0, _h(k0 ^ 0x9E3779B9)


def check_stochastic(stochastic_rounding: Any, seed: Any, step: int, param: Any
                     ) -> tuple[int, int] | None:
    """None (round to nearest) or the keys; `seed` an int in [0, 2**64)."""
    if not isinstance(stochastic_rounding, (bool, np.bool_)):
        raise TypeError(f"`stochastic_rounding` must be a bool, got "
                        f"{type(stochastic_rounding).__name__}")
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError("`seed` must be an int, got bool")
    try:
        seed_ = operator.index(seed)
    except TypeError:
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__}") from None
    if not 0 <= seed_ < 2**64:
        raise ValueError(f"`seed` must be in [0, 2**64), got {seed_}")
    if not stochastic_rounding:
        return None
    from fastadagrad._mixed_precision import is_low_precision

    if not is_low_precision(param):
        raise TypeError("`stochastic_rounding`=True rounds float16/bfloat16 stores; the "
                        f"param has dtype {getattr(param, 'dtype', type(param).__name__)}")
    return keys(seed_, step)


def _hash(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _U32(16))
    x = x * _U32(0x7FEB352D)
    x = x ^ (x >> _U32(15))
    x = x * _U32(0x846CA68B)
    out: np.ndarray = x ^ (x >> _U32(16))
    return out


def bits(k: tuple[int, int], counters: np.ndarray) -> np.ndarray:
    """The uint32 random bits of int64 element counters."""
    c = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    lo = (c & np.uint64(_M32)).astype(_U32)
    hi = (c >> np.uint64(32)).astype(_U32)
    return _hash(_hash(lo ^ _U32(k[0])) ^ hi ^ _U32(k[1]))


def narrow(x: np.ndarray, dtype: np.dtype, r: np.ndarray) -> np.ndarray:
    """float32 `x` rounded stochastically to float16/bfloat16 `dtype` with random bits `r`
    (uint32, x's shape): an array of `dtype`."""
    with np.errstate(all="ignore"):
        u = np.ascontiguousarray(x, dtype=np.float32).view(_U32)
        a = u & _U32(0x7FFFFFFF)
        nan = a > _U32(0x7F800000)
        if dtype == np.float16:
            sign = (u >> _U32(16)) & _U32(0x8000)
            normal = (a + _U32(0xC8000000) + (r >> _U32(19))) >> _U32(13)
            small = a < _U32(0x38800000)
            q = np.where(small, a, _U32(0)).view(np.float32) * np.float32(2.0**24)
            qi = q.astype(np.int32)
            up = (r >> _U32(8)).astype(np.float32) < (q - qi.astype(np.float32)) \
                * np.float32(2.0**24)
            res = np.where(small, qi.astype(_U32) + up.astype(_U32), normal)
            res = np.where(a >= _U32(0x47800000), _U32(0x7C00), res)
            res = np.where(nan, _U32(0x7E00) | ((a >> _U32(13)) & _U32(0x3FF)), res)
            f16: np.ndarray = (res | sign).astype(np.uint16).view(np.float16)
            return f16
        res = np.where(nan, (u >> _U32(16)) | _U32(0x40), (u + (r >> _U32(16))) >> _U32(16))
        return res.astype(np.uint16).view(dtype)


def store(dst: np.ndarray, x: np.ndarray, k: tuple[int, int], counters: np.ndarray) -> None:
    """dst[...] = x (float32, dst's shape) rounded stochastically; counters: dst's shape."""
    dst[...] = narrow(x, dst.dtype.newbyteorder("="), bits(k, counters))
