"""The NumPy twin of the AdaGrad-family loops (_csrc/family_typed.h), operation for operation:
every ufunc rounds once in the arrays' dtype, so the bytes equal the compiled backend's.

Rules (see fastadagrad.family for the public functions and README "The AdaGrad family"):
  proximal  accum += g*g; a = lr / sqrt(accum); prox = p - g*a;
            l1 > 0: p = (sign(prox) * max(|prox| - a*l1, 0)) / (1 + l2*a)  else p = prox / (1 + l2*a)
  da        gacc += g; gg += g*g; den = l2*(t*lr) + sqrt(gg);
            l1 > 0: p = ((-lr * sign(gacc)) * max(|gacc| - t*l1, 0)) / den  else p = (-lr * gacc) / den
  glove     p -= (lr*g) / sqrt(accum); accum += g*g    (the accumulator from before this gradient)
sign(x) = (x > 0) - (x < 0) (0 for NaN); max(x, 0) keeps NaN.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from fastadagrad import _clipping, reference

RULE_IDS = {"proximal": 1, "da": 2, "glove": 3}   # FA_RULE_* in _csrc/family_table.h


class FamilyOptions(NamedTuple):
    """Normalised hyper-parameters of one family step (the C struct FamilyOpts)."""

    rule: int
    lr: float
    l1: float = 0.0
    l2: float = 0.0
    step: float = 1.0
    grad_scale: float = 1.0   # clipnorm: the rule sees grad * grad_scale
    clipvalue: float = 0.0    # clipvalue (> 0): the rule sees grad clipped to [-v, v]


def _sign(x: np.ndarray) -> np.ndarray:
    t = x.dtype.type
    return np.asarray(np.subtract(np.where(x > 0, t(1), t(0)), np.where(x < 0, t(1), t(0))))


def _pos(x: np.ndarray) -> np.ndarray:
    """max(x, 0), NaN kept (the C select on x < 0)."""
    return np.where(x < 0, x.dtype.type(0), x)


def _step(param: np.ndarray, grad: np.ndarray, states: Sequence[np.ndarray],
          f: FamilyOptions) -> None:
    t = param.dtype.newbyteorder("=").type
    lr, l1, l2 = t(f.lr), t(f.l1), t(f.l2)
    g = np.asarray(grad, dtype=param.dtype.newbyteorder("="))
    if f.grad_scale != 1:
        g = np.multiply(g, t(f.grad_scale))
    if f.clipvalue > 0:
        g = _clipping.clip_values(g, f.clipvalue)
    if f.rule == RULE_IDS["proximal"]:
        acc = np.add(states[0], np.multiply(g, g))
        states[0][...] = acc
        a = np.divide(lr, np.sqrt(acc))
        prox = np.subtract(param, np.multiply(g, a))
        den = np.add(t(1), np.multiply(l2, a))
        if f.l1 > 0:
            shrunk = _pos(np.subtract(np.abs(prox), np.multiply(a, l1)))
            param[...] = np.divide(np.multiply(_sign(prox), shrunk), den)
        else:
            param[...] = np.divide(prox, den)
    elif f.rule == RULE_IDS["da"]:
        gacc = np.add(states[0], g)
        gg = np.add(states[1], np.multiply(g, g))
        states[0][...] = gacc
        states[1][...] = gg
        step = t(f.step)
        den = np.add(np.multiply(l2, np.multiply(step, lr)), np.sqrt(gg))
        nlr = np.multiply(lr, t(-1))
        if f.l1 > 0:
            shrunk = _pos(np.subtract(np.abs(gacc), np.multiply(step, l1)))
            param[...] = np.divide(np.multiply(np.multiply(nlr, _sign(gacc)), shrunk), den)
        else:
            param[...] = np.divide(np.multiply(nlr, gacc), den)
    else:
        acc = np.array(states[0], copy=True)
        param[...] = np.subtract(param, np.divide(np.multiply(lr, g), np.sqrt(acc)))
        states[0][...] = np.add(acc, np.multiply(g, g))


def family_validated(param: np.ndarray, grad: np.ndarray, states: Sequence[np.ndarray],
                     f: FamilyOptions) -> None:
    """One dense family step on validated arrays, in place (any layout): the twin of
    kernels.family_validated."""
    if param.size:
        with np.errstate(all="ignore"):
            _step(param, grad, states, f)


def family_sparse_validated(table: np.ndarray, states: Sequence[np.ndarray], idx: np.ndarray,
                            grads: np.ndarray, f: FamilyOptions, duplicates: str) -> None:
    """A family rule on the rows idx of table (validated): duplicates "sum" (merged in order
    of appearance, then one step per row) or "sequential" (one step per occurrence, in order)."""
    if idx.size == 0 or table.shape[1] == 0:
        return
    if f.clipvalue > 0:   # every occurrence clipped before the duplicates rule
        grads = _clipping.clip_values(grads, f.clipvalue)
        f = f._replace(clipvalue=0.0)
    if duplicates == "sum":
        rows, merged = reference.merge_duplicates(idx, grads)
        batches = [(rows, merged)]
    else:
        ranks = reference.occurrence_ranks(idx)
        batches = [(idx[pos], grads[pos]) for pos in
                   (np.flatnonzero(ranks == k) for k in range(int(ranks.max()) + 1))]
    with np.errstate(all="ignore"):
        for rows, g in batches:
            p = table[rows]
            st = [s[rows] for s in states]
            _step(p, g, st, f)
            table[rows] = p
            for s, v in zip(states, st):
                s[rows] = v


CLIP_BLOCK = 4096   # FA_CLIP_BLOCK in _csrc/family_table.h
CLIP_LANES = 8


def sum_of_squares(x: np.ndarray) -> float:
    """Σx² in double with the compiled kernel's fixed order: the elements in memory order
    (C or Fortran, whichever the array has; NumPy's "K" order otherwise), in blocks of
    CLIP_BLOCK; in each block lane k sums elements k, k+8, ... left to right, then
    ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); the block sums are added left to right."""
    flat = np.asarray(x).ravel(order="K").astype(np.float64)
    if flat.size == 0:
        return 0.0
    nb = -(-flat.size // CLIP_BLOCK)
    blocks = np.zeros(nb * CLIP_BLOCK)
    blocks[:flat.size] = flat * flat            # the padding adds +0: exact
    lanes = np.cumsum(blocks.reshape(nb, -1, CLIP_LANES), axis=1)[:, -1, :]
    l = [lanes[:, k] for k in range(CLIP_LANES)]
    sums = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    return float(np.cumsum(sums)[-1])
