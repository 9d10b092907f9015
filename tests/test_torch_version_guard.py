"""fastadagrad.torch's version guard (issue 13): the torch internals it uses live in one module,
fastadagrad.torch._compat; on a torch outside the tested range the drop-in is torch's own
optimizer (with a RuntimeWarning), unless FASTADAGRAD_TORCH_UNTESTED=1 asks for the fast path,
which then requires every internal (ImportError naming the missing one otherwise). Other torch
versions are simulated in a fresh interpreter by setting torch.__version__ before the import."""

from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

from fastadagrad.torch import _compat  # noqa: E402

from _helpers import run_python  # noqa: E402

# Runs in a fresh interpreter: pretend torch is VERSION (and optionally lacks an internal),
# import fastadagrad.torch, train 5 steps with it and with torch.optim.Adagrad, report.
SCRIPT = textwrap.dedent('''
    import sys, warnings
    import torch
    import torch.optim.optimizer
    torch.__version__ = sys.argv[1]
    if sys.argv[2]:
        delattr(sys.modules["torch.optim.optimizer"], sys.argv[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastadagrad.torch as ft
    print("WARN", [str(w.message) for w in caught if w.category is RuntimeWarning])
    p = torch.nn.Parameter(torch.randn(7, 5, generator=torch.Generator().manual_seed(0)))
    q = torch.nn.Parameter(p.detach().clone())
    ours, theirs = ft.Adagrad([p], lr=0.1, lr_decay=0.01), torch.optim.Adagrad([q], lr=0.1, lr_decay=0.01)
    for i in range(5):
        g = torch.randn(7, 5, generator=torch.Generator().manual_seed(i + 1))
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    print("ACCELERATED", ft.accelerated(p), hasattr(ours, "_plans"))
    print("SAME_BYTES", bool(torch.equal(p.detach(), q.detach())
                             and torch.equal(ours.state[p]["sum"], theirs.state[q]["sum"])))
    print("CLASS", type(ours).__module__, issubclass(type(ours), torch.optim.Adagrad))
''')


def run(version: str, env: dict[str, str] | None = None, remove: str = ""):
    out = run_python("", args=("-c", SCRIPT, version, remove), env=env)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    return out, lines


def test_the_installed_torch_is_tested_and_has_every_internal():
    assert _compat.FAST_PATH and _compat.FALLBACK_REASON == ""
    lo, hi = _compat.TESTED_RANGE
    assert lo <= _compat.TORCH_VERSION <= hi
    assert _compat.missing_internals() == []


@pytest.mark.parametrize("version, expected", [
    ("2.13.0+cpu", (2, 13)), ("2.14.0a0+git1234abc", (2, 14)), ("3.0", (3, 0)),
    ("2.9.1", (2, 9)), ("10.11.12", (10, 11))])
def test_parse_version(version, expected):
    assert _compat.parse_version(version) == expected


def test_parse_version_refuses_what_it_cannot_read():
    with pytest.raises(ImportError, match="cannot read torch's version 'nightly'"):
        _compat.parse_version("nightly")


@pytest.mark.parametrize("version", ["2.12.1", "2.14.0", "3.0.0", "1.13.1"])
def test_decide_outside_the_tested_range(version):
    fast, why = _compat._decide(version, {})
    assert not fast
    assert f"torch {version} is outside the tested range" in why
    assert "FASTADAGRAD_TORCH_UNTESTED=1" in why
    assert _compat._decide(version, {"FASTADAGRAD_TORCH_UNTESTED": "1"}) == (True, "")
    assert not _compat._decide(version, {"FASTADAGRAD_TORCH_UNTESTED": "yes"})[0]


def test_decide_inside_the_tested_range():
    lo, hi = _compat.TESTED_RANGE
    for major, minor in (lo, hi):
        assert _compat._decide(f"{major}.{minor}.0", {}) == (True, "")
        assert _compat._decide(f"{major}.{minor}.7+cu999", {}) == (True, "")


def test_untested_torch_falls_back_to_torchs_own_step_with_a_warning():
    out, lines = run("2.99.0")
    assert out.returncode == 0, out.stderr
    assert "torch 2.99.0 is outside the tested range" in lines["WARN"]
    assert lines["ACCELERATED"] == "False False"   # torch's optimizer: no plan, nothing taken
    assert lines["SAME_BYTES"] == "True"            # it is torch's step
    assert lines["CLASS"] == "fastadagrad.torch True"


def test_untested_torch_takes_the_fast_path_when_asked():
    out, lines = run("2.99.0", env={"FASTADAGRAD_TORCH_UNTESTED": "1"})
    assert out.returncode == 0, out.stderr
    assert lines["WARN"] == "[]"
    assert lines["ACCELERATED"] == "True True"
    assert lines["CLASS"] == "fastadagrad.torch True"


def test_tested_torch_runs_the_fast_path_without_warning():
    out, lines = run(torch.__version__)
    assert out.returncode == 0, out.stderr
    assert lines["WARN"] == "[]" and lines["ACCELERATED"] == "True True"


@pytest.mark.parametrize("env, hint", [({"FASTADAGRAD_TORCH_UNTESTED": "1"}, True), (None, False)])
def test_a_missing_internal_is_an_import_error_naming_it(env, hint):
    version = "2.99.0" if hint else torch.__version__
    out, _ = run(version, env=env, remove="_get_scalar_dtype")
    assert out.returncode != 0
    assert "ImportError: fastadagrad.torch: torch" in out.stderr
    assert "lacks internals the fast path uses: torch.optim.optimizer._get_scalar_dtype" in out.stderr
    assert ("unset FASTADAGRAD_TORCH_UNTESTED" in out.stderr) == hint


def test_the_rest_of_the_package_reaches_torch_internals_only_through_compat():
    import ast
    import pathlib

    import fastadagrad.torch as ft
    internals = {"_C", "_init_group", "_get_scalar_dtype", "_device_dtype_check_for_fused",
                 "_increment_version", "_local_tensor", "_indices", "_values",
                 "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                 "_optimizer_step_code", "_global_optimizer_pre_hooks",
                 "_global_optimizer_post_hooks", "_profiler_enabled", "_zero_grad_profile_name",
                 "profile_hook_step", "_use_grad_for_differentiable", "grad_scale", "found_inf"}
    checked = 0
    for path in pathlib.Path(ft.__file__).parent.glob("*.py"):
        if path.name == "_compat.py":
            continue
        checked += 1
        used = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
                used.update([node.module] + [alias.name for alias in node.names])
        torch_modules = {u for u in used if u.startswith("torch.")}
        assert used & internals == set() and torch_modules == set(), path.name
    assert checked >= 6   # __init__, _optimizer, _plan, _collect, _apply, _views, _fallback
