"""The optimizer's checkpoints: state_dict() and load_state_dict() (validated first, then
written, so a bad state leaves the optimizer bit-identical)."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from fastadagrad import _validation
from fastadagrad.optimizer import _master, _rules
from fastadagrad.optimizer._options import GROUP_OPTIONS

if TYPE_CHECKING:
    from fastadagrad.optimizer._core import AdaGrad

NONFINITE = ("propagate", "skip", "raise")
STATE_FORMAT = "fastadagrad.AdaGrad/1"


def state_dict(opt: AdaGrad) -> dict[str, Any]:
    d: dict[str, Any] = {"format": STATE_FORMAT, "convention": opt.convention or "",
                         "nonfinite": opt.nonfinite, "groups": len(opt.groups),
                         "skipped_steps": opt.skipped_steps, **_rules.state(opt)}
    for gi, g in enumerate(opt.groups):
        d[f"group{gi}.step"] = int(g.step)
        d[f"group{gi}.arrays"] = len(g.params)
        for k, v in g.options.saved().items():
            d[f"group{gi}.{k}"] = v
        for i, a in enumerate(g.accums):
            d[f"group{gi}.accum{i}"] = a.copy()
    d.update(_master.saved_masters(opt))
    return d


def load_state_dict(opt: AdaGrad, state: Mapping[str, Any]) -> None:
    def get(key: str) -> Any:
        if key not in state:
            raise ValueError(f"state has no entry {key!r}")
        v = state[key]
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        return v

    if get("format") != STATE_FORMAT:
        raise ValueError(f"state format {get('format')!r} is not {STATE_FORMAT!r}")
    if get("groups") != len(opt.groups):
        raise ValueError(f"state has {get('groups')} groups, this optimizer has {len(opt.groups)}")
    new_steps, new_options, new_accums = [], [], []
    for gi, g in enumerate(opt.groups):
        if get(f"group{gi}.arrays") != len(g.params):
            raise ValueError(f"state group {gi} has {get(f'group{gi}.arrays')} arrays, "
                             f"this optimizer's has {len(g.params)}")
        step = _state_count(f"group{gi}.step", get(f"group{gi}.step"))
        options = g.options.replace(**{k: get(f"group{gi}.{k}") for k in GROUP_OPTIONS})
        new_options.append(options.checked(f"group{gi}."))
        if new_options[-1].rowwise != g.rowwise:
            raise ValueError(f"state `group{gi}.rowwise` is {new_options[-1].rowwise} but "
                             f"this optimizer's group {gi} was built with rowwise={g.rowwise}")
        new_steps.append(step)
        new_accums.append([_saved_accum(state, gi, i, a, g.names[i])
                           for i, a in enumerate(g.accums)])
    skipped = _state_count("skipped_steps", get("skipped_steps"))
    nonfinite = get("nonfinite")
    if nonfinite not in NONFINITE:
        raise ValueError(f"state `nonfinite` must be one of {NONFINITE}, got {nonfinite!r}")
    extra_copies = _rules.check_state(opt, state) + _master.master_state(opt, state)
    # All checked: now write.
    for target, saved in extra_copies:
        np.copyto(target, saved)
    for g, step, options, accs in zip(opt.groups, new_steps, new_options, new_accums):
        g.step = step
        g.set_options(options)
        for a, saved in zip(g.accums, accs):
            np.copyto(a, saved)
    opt.skipped_steps = skipped
    opt.nonfinite = nonfinite


def _saved_accum(state: Mapping[str, Any], gi: int, i: int, a: np.ndarray,
                 name: str) -> np.ndarray:
    """The saved accumulator `group{gi}.accum{i}`: a's shape and dtype, finite and >= 0."""
    saved = state.get(f"group{gi}.accum{i}")
    if not isinstance(saved, np.ndarray) or saved.shape != a.shape or saved.dtype != a.dtype:
        desc = (f"{saved.dtype}{saved.shape}" if isinstance(saved, np.ndarray)
                else type(saved).__name__)
        raise ValueError(f"state `group{gi}.accum{i}` must be a {a.dtype} array of shape "
                         f"{a.shape} (for {name}), got {desc}")
    with np.errstate(invalid="ignore"):
        if not (np.isfinite(saved).all() and (saved >= 0).all()):
            raise ValueError(f"state `group{gi}.accum{i}` must be finite and >= 0 "
                             "everywhere (a sum of squares)")
    return saved


def _state_count(name: str, value: Any) -> int:
    """A loaded counter: an integer in [0, 2**63 - 1] (an int64)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"state `{name}` must be an integer, got {value!r}")
    if not 0 <= int(value) <= _validation.MAX_STEP:
        raise ValueError(f"state `{name}` must be in [0, 2**63 - 1], got {value!r}")
    return int(value)
