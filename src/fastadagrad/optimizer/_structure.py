"""The structure of `params` and `grads`: a list of arrays, a list of groups or a dict of
named arrays; and SparseGrad, the gradient of some rows of a 2-D parameter."""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Mapping, NamedTuple, Sequence, Union, cast

import numpy as np

ArrayList = List[np.ndarray]
Params = Union[Sequence[np.ndarray], Sequence[Mapping[str, Any]], Mapping[str, np.ndarray]]
RawGroup = tuple[ArrayList, List[str], dict[str, Any]]   # (arrays, their names, overrides)


class SparseGrad(NamedTuple):
    """The gradient of a 2-D parameter given on some rows: `values[k]` is the gradient of row
    `indices[k]` (int32/int64). AdaGrad.step routes it to fastadagrad.sparse_adagrad_update:
    only those rows and their accumulators change. `duplicates` ("sum", "sequential",
    "keras"; None: the optimizer's `duplicates`) says how repeated indices are applied."""

    indices: np.ndarray
    values: np.ndarray
    duplicates: str | None = None


def parse_params(params: Params) -> tuple[str, list[Any], list[RawGroup]]:
    """(structure, the dict's key objects (dict params only), groups)."""
    if isinstance(params, Mapping):
        keys = list(params)
        return "dict", keys, [([params[k] for k in keys], [f"params[{k!r}]" for k in keys], {})]
    if isinstance(params, np.ndarray) or not isinstance(params, Iterable):
        raise TypeError("`params` must be a list of arrays, a list of parameter groups "
                        f"(dicts with 'params') or a dict of arrays, got {type(params).__name__}")
    items = list(params)
    if not items:
        raise ValueError("`params` is empty")
    if all(isinstance(x, Mapping) for x in items):
        groups: list[RawGroup] = []
        for gi, group in enumerate(items):
            assert isinstance(group, Mapping)
            if "params" not in group:
                raise ValueError(f"`params[{gi}]` has no 'params' entry")
            arrays = list(group["params"])
            names = [f"params[{gi}]['params'][{i}]" for i in range(len(arrays))]
            groups.append((arrays, names, {k: v for k, v in group.items() if k != "params"}))
        return "groups", [], groups
    return "list", [], [(cast(ArrayList, items), [f"params[{i}]" for i in range(len(items))], {})]


def split_grads(structure: str, keys: list[Any], sizes: list[int], grads: Any) -> list[list[Any]]:
    """Grads in the structure of params -> one list per group (counts checked); `sizes`: the
    number of arrays of each group."""
    if structure == "dict":
        if not isinstance(grads, Mapping):
            raise TypeError(f"`grads` must be a dict like `params`, got {type(grads).__name__}")
        # the params' own key objects, never re-parsed from names
        if len(grads) != len(keys) or any(k not in grads for k in keys):
            raise ValueError(f"`grads` keys {sorted(map(repr, grads))} differ from the params' "
                             f"keys {sorted(map(repr, keys))}")
        return [[grads[k] for k in keys]]
    if (type(grads) is not list and type(grads) is not tuple   # (skips the ABC checks)
            and (isinstance(grads, (np.ndarray, Mapping)) or not isinstance(grads, Sequence))):
        raise TypeError(f"`grads` must be a list like `params`, got {type(grads).__name__}")
    if structure == "groups":
        if len(grads) != len(sizes):
            raise ValueError(f"`grads` has {len(grads)} groups, `params` has {len(sizes)}")
        out = []
        for gi, (g, size) in enumerate(zip(grads, sizes)):
            if (type(g) is not list and type(g) is not tuple
                    and (isinstance(g, (np.ndarray, SparseGrad)) or not isinstance(g, Sequence))):
                raise TypeError(f"`grads[{gi}]` must be a list of arrays, got {type(g).__name__}")
            if len(g) != size:
                raise ValueError(f"`grads[{gi}]` has {len(g)} arrays, the group has {size}")
            out.append(list(g))
        return out
    if len(grads) != sizes[0]:
        raise ValueError(f"`grads` has {len(grads)} arrays, `params` has {sizes[0]}")
    return [list(grads)]


def grad_name(param_name: str) -> str:
    """The name of a param's grad in step()'s argument: params[0]['params'][2] -> grads[0][2],
    params[3] -> grads[3], params['w'] -> grads['w']."""
    m = re.fullmatch(r"params\[(\d+)\]\['params'\]\[(\d+)\]", param_name)
    if m:
        return f"grads[{m.group(1)}][{m.group(2)}]"
    return "grads" + param_name[len("params"):]
