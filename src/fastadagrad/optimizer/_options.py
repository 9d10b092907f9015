"""The optimizer's options: the peers' conventions and one group's checked options.

`GroupOptions` is a frozen dataclass: every option is a named field, so a misspelt option is
an error where it is read or replaced (AttributeError / TypeError), never a silent default.
`GroupOptions.step_options(step)` turns it into the kernels' `DenseOptions` at one step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fastadagrad import _validation
from fastadagrad._validation import DenseOptions

#: Defaults and formula of each peer. `weight_decay` is "coupled" (g += wd * p, torch) or
#: "decoupled" (p -= p * wd * lr before the step, Keras 3). Sources: torch/optim/adagrad.py,
#: keras/src/optimizers/adagrad.py, optax/_src/transform.py (scale_by_rss), TensorFlow
#: core/kernels/training_ops.cc (ApplyAdagradV2).
CONVENTIONS: dict[str | None, dict[str, Any]] = {
    None: dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.0, eps_placement="outside",
               weight_decay_mode="coupled", zero_if_accum_zero=False),
    "torch": dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.0, eps_placement="outside",
                  weight_decay_mode="coupled", zero_if_accum_zero=False),
    "keras": dict(lr=0.001, eps=1e-7, initial_accumulator_value=0.1, eps_placement="inside",
                  weight_decay_mode="decoupled", zero_if_accum_zero=False, float32_lr=True),
    "optax": dict(lr=None, eps=1e-7, initial_accumulator_value=0.1, eps_placement="inside",
                  weight_decay_mode="coupled", zero_if_accum_zero=True),
    "tf": dict(lr=0.001, eps=1e-7, initial_accumulator_value=0.1, eps_placement="outside",
               weight_decay_mode="coupled", zero_if_accum_zero=False),
}
#: The options a parameter group may override (and the ones a state dict saves per group).
GROUP_OPTIONS = ("lr", "eps", "eps_placement", "lr_decay", "weight_decay",
                 "initial_accumulator_value", "maximize", "rowwise")


@dataclasses.dataclass(frozen=True)
class GroupOptions:
    """One parameter group's options, checked (see `checked`)."""

    lr: Any
    eps: float
    eps_placement: str
    lr_decay: float
    weight_decay: float
    initial_accumulator_value: float
    maximize: bool
    rowwise: bool
    weight_decay_mode: str = "coupled"   # the convention's: "coupled" or "decoupled"
    zero_if_accum_zero: bool = False     # optax: no update where the accumulator is 0
    float32_lr: bool = False             # keras: lr rounded through float32
    l1: float = 0.0                      # AdaGrad(rule=...): the family's penalties
    l2: float = 0.0

    def replace(self, **changes: Any) -> "GroupOptions":
        """A copy with `changes` (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    def checked(self, where: str) -> "GroupOptions":
        """Validate every option (names prefixed with `where` in errors); return the
        normalised options (Python floats and bools; Keras' lr rounded through float32)."""
        if self.lr is None:
            raise TypeError(f"`{where}lr` is required with convention='optax' (optax has no default)")
        reals = {name: _validation.check_real(f"{where}{name}", getattr(self, name))
                 for name in ("lr", "eps", "lr_decay", "weight_decay",
                              "initial_accumulator_value")}
        if self.float32_lr:
            # Keras keeps `learning_rate` in a float32 variable and casts it to the variable's
            # dtype: float64 params step with float64(float32(lr)) (tested against Keras itself)
            reals["lr"] = float(np.float32(reals["lr"]))
        _validation.check_eps_placement(self.eps_placement, f"{where}eps_placement")
        out = self.replace(**reals,
                           maximize=_validation.check_flag(f"{where}maximize", self.maximize),
                           rowwise=_validation.check_flag(f"{where}rowwise", self.rowwise))
        if out.rowwise and (out.zero_if_accum_zero or (
                out.weight_decay_mode == "decoupled" and out.weight_decay != 0)):
            raise ValueError(f"`{where}rowwise` is not available with this convention's formula "
                             "(optax's zero mask or Keras' decoupled weight decay)")
        return out

    def clr(self, step: int) -> float:
        """The effective learning rate at `step` (_validation.effective_lr)."""
        return _validation.effective_lr(self.lr, self.lr_decay, step)

    def step_options(self, step: int) -> DenseOptions:
        """The kernels' options for this group at `step`."""
        decoupled = self.weight_decay_mode == "decoupled"
        return DenseOptions(
            clr=self.clr(step), eps=self.eps,
            weight_decay=0.0 if decoupled else self.weight_decay, maximize=self.maximize,
            eps_inside=self.eps_placement == "inside",
            decoupled_weight_decay=self.weight_decay if decoupled else 0.0,
            zero_if_accum_zero=self.zero_if_accum_zero)

    def saved(self) -> dict[str, Any]:
        """The per-group options a state dict records."""
        return {k: getattr(self, k) for k in GROUP_OPTIONS}


def group_options(defaults: GroupOptions, overrides: dict[str, Any], where: str,
                  gi: int | None = None) -> GroupOptions:
    """`defaults` with a group's `overrides` (only GROUP_OPTIONS may be overridden), checked."""
    unknown = set(overrides) - set(GROUP_OPTIONS)
    if unknown:
        raise ValueError(f"`params[{gi}]` has unknown options {sorted(unknown)}; "
                         f"known: {GROUP_OPTIONS}")
    return defaults.replace(**overrides).checked(where)
