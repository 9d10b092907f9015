"""ctypes peer: FBGEMM's CPU JIT sparse AdaGrad (fbgemm::GenerateSparseAdaGrad<int64_t>) through
libfbshim.so (benchmark only).

FBGEMM's kernel, per index i in batch order (one step per occurrence, i.e. duplicates
"sequential"):
    element-wise: h[r] += g*g;            w[r] += lr * g / (sqrt(h[r]) + eps)
    row-wise:     h[r] += mean(g*g);      w[r] += lr / (sqrt(h[r]) + eps) * g
FBGEMM *adds* the step (caffe2 passes a negative learning rate), so this peer passes -lr to
get the usual descent step table[r] -= lr * g / (sqrt(accum[r]) + eps).
"""

from __future__ import annotations

import ctypes
import math
import os
from typing import Sequence

import numpy as np

LIB_PATH = os.environ.get("FBSHIM_LIB",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "libfbshim.so"))

_LIBS: dict[str, ctypes.CDLL] = {}


def load(path: str = LIB_PATH) -> ctypes.CDLL:
    """libfbshim.so (or a diagnostic variant built from the same shim), argtypes set."""
    lib = _LIBS.get(path)
    if lib is not None:
        return lib
    lib = ctypes.CDLL(path)
    lib.fb_make.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
    lib.fb_make.restype = ctypes.c_void_p
    lib.fb_free.argtypes = (ctypes.c_void_p,)
    lib.fb_free.restype = None
    for name in ("fb_run", "fb_run_vzu"):
        f = getattr(lib, name)
        f.argtypes = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                      ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float,
                      ctypes.c_float)
        f.restype = ctypes.c_int
    lib.fb_isa.restype = ctypes.c_int
    lib.fb_jit_isa.restype = ctypes.c_int
    _LIBS[path] = lib
    return lib


_lib = load()


def isa() -> str:
    """What FBGEMM sees (fbgemmHasAvx2Support / fbgemmHasAvx512Support) and which JIT
    generator GenerateSparseAdaGrad takes (hard-wired to AVX2 at this FBGEMM commit)."""
    bits = _lib.fb_isa()
    jit = {2: "AVX2 JIT (ymm)", 0: "reference C++ (no JIT)"}.get(_lib.fb_jit_isa(), "?")
    return (f"fbgemmHasAvx2Support={bits & 1}, fbgemmHasAvx512Support={(bits >> 1) & 1}, "
            f"fbgemmInstructionSet=avx512-class:{(bits >> 2) & 1}; SparseAdaGrad kernel: {jit}")


class FbgemmSparseAdagrad:
    """One JIT kernel (D, rowwise) bound to (table, accum) and a cycle of (indices, grads)
    pairs, all pointers precomputed: step() is one ctypes call on the next pair (batch i uses
    batches[i % len(batches)] and grads[i % len(grads)], as sparse_small_d.py's stepper)."""

    def __init__(self, table: np.ndarray, accum: np.ndarray, batches: Sequence[np.ndarray],
                 grads: Sequence[np.ndarray], *, lr: float = 0.01, eps: float = 1e-10,
                 prefetch: int = 16, lib: str = LIB_PATH, vzeroupper: bool = False) -> None:
        """lib: another build of the shim (diagnostics); vzeroupper=True: call fb_run_vzu
        (a vzeroupper after the kernel; FBGEMM's JIT epilogue has none). Defaults: FBGEMM
        as built from source, unmodified."""
        if table.dtype != np.float32 or accum.dtype != np.float32:
            raise TypeError("FBGEMM's SparseAdaGrad is float32 only")
        if table.ndim != 2 or not table.flags.c_contiguous or not accum.flags.c_contiguous:
            raise ValueError("table (N, D) and accum must be C-contiguous")
        n, d = table.shape
        self.rowwise = accum.ndim == 1
        if accum.shape != ((n,) if self.rowwise else (n, d)):
            raise ValueError("accum must be (N, D) or (N,)")
        for idx in batches:
            if idx.dtype != np.int64 or idx.ndim != 1 or not idx.flags.c_contiguous:
                raise TypeError("indices must be 1-D C-contiguous int64")
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError("index out of range")
        for g in grads:
            if g.dtype != np.float32 or g.ndim != 2 or g.shape[1] != d \
                    or not g.flags.c_contiguous:
                raise ValueError("grads must be C-contiguous float32 (B, D)")
        self._lib = L = load(lib)
        k = L.fb_make(d, 1 if self.rowwise else 0, prefetch)
        if not k:
            raise RuntimeError("fbgemm::GenerateSparseAdaGrad failed")
        self._k = k
        self._keep = (table, accum, list(batches), list(grads))   # keep the buffers alive
        period = len(batches) * len(grads) // math.gcd(len(batches), len(grads))
        w, h = table.ctypes.data, accum.ctypes.data
        self._args = []
        for i in range(period):
            idx, g = batches[i % len(batches)], grads[i % len(grads)]
            if g.shape[0] != idx.size:
                raise ValueError("grads rows != batch size")
            self._args.append((k, idx.size, n * d, w, g.ctypes.data, h, idx.ctypes.data,
                               eps, -lr))
        self._period = period
        self._i = 0
        self._run = L.fb_run_vzu if vzeroupper else L.fb_run

    def step(self) -> None:
        i = self._i
        self._i = i + 1
        a = self._args[i % self._period]
        if self._run(*a) != a[1]:
            raise RuntimeError("FBGEMM SparseAdaGrad stopped early (index out of range)")

    __call__ = step

    def __del__(self) -> None:
        k, self._k = getattr(self, "_k", None), None
        if k:
            self._lib.fb_free(k)
