"""fastadagrad.torch.Adagrad against torch.optim.Adagrad (skipped with a reason without torch).

torch accumulates with a fused multiply-add and NumPy cannot (upstream:
torch/optim/adagrad.py, aten/src/ATen/native/cpu/FusedAdagradKernel.cpp; and
tests/test_torch_compat.py), so accelerated params are compared per step relative to the step's
scale, and after independent runs with rtol 1e-4 (float32); whatever falls back to torch must be
bit-identical to torch, because it is torch.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

import fastadagrad  # noqa: E402
import fastadagrad.torch as ft  # noqa: E402
from fastadagrad._backend import compiled_available  # noqa: E402

from _helpers import run_python  # noqa: E402

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])
nn = torch.nn


# ----------------------------------------------------------------------------- helpers
def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1)).to(dtype)


def data(seed: int = 1, n: int = 64, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g, dtype=dtype), torch.randn(n, 1, generator=g, dtype=dtype)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, x, y) -> None:
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()


def assert_close_run(ours, theirs, rtol: float = 1e-4) -> None:
    """Independent runs: within rtol of each other, relative to each tensor's scale."""
    for a, b in zip(ours, theirs):
        a, b = a.detach().numpy(), b.detach().numpy()
        scale = max(float(np.abs(b).max()), 1e-30)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def assert_step_close(x: np.ndarray, t: np.ndarray, before: np.ndarray) -> None:
    """One step from the same state: 1 ulp of the param plus a few ulps of the step
    (the per-step bound of tests/test_torch_compat.py)."""
    eps = np.finfo(t.dtype).eps
    bound = np.spacing(np.abs(t)) + 4 * eps * np.abs(t - before)
    assert np.all(np.abs(x - t) <= bound)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.detach().contiguous(), b.detach().contiguous()
    return a.dtype == b.dtype and a.shape == b.shape and (
        a.view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8)).equal(
        b.view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8))


def state_tensors(opt, params):
    return [opt.state[p]["sum"] for p in params], [opt.state[p]["step"] for p in params]


def fast_params(plan) -> list:
    """The params a group's plan hands to the fused kernels, in order."""
    return [r.param for r in plan.records]


def tableable(plan) -> list[bool]:
    """Per fast param of a group's plan: can it be an entry of the group's ArrayGroup?"""
    return [r.tableable for r in plan.records]

# ----------------------------------------------------------------------------- the API
def test_signature_and_class_match_torch():
    ours = inspect.signature(ft.Adagrad.__init__).parameters
    theirs = inspect.signature(torch.optim.Adagrad.__init__).parameters
    assert [(n, p.kind, p.default) for n, p in ours.items()] == \
           [(n, p.kind, p.default) for n, p in theirs.items()]
    assert issubclass(ft.Adagrad, torch.optim.Optimizer)
    assert ft.torch is torch   # `import torch` inside fastadagrad/torch/ is the real torch


def test_state_created_eagerly_like_torch():
    p1 = nn.Parameter(torch.randn(3, 4))
    p2 = nn.Parameter(torch.randn(5).double())
    ours = ft.Adagrad([p1, p2], initial_accumulator_value=0.25)
    theirs = torch.optim.Adagrad([p1, p2], initial_accumulator_value=0.25)
    for p in (p1, p2):
        assert set(ours.state[p]) == set(theirs.state[p]) == {"step", "sum"}
        for k in ("step", "sum"):
            assert same_bytes(ours.state[p][k], theirs.state[p][k])
        assert ours.state[p]["step"].dtype == torch.float32
    assert ours.param_groups[0].keys() == theirs.param_groups[0].keys()
    assert ours.defaults == theirs.defaults
    with pytest.raises(ValueError, match="Invalid learning rate"):
        ft.Adagrad([p1], lr=-1.0)
    with pytest.raises(RuntimeError, match="differentiable"):
        ft.Adagrad([p1], fused=True, differentiable=True)


def test_import_fastadagrad_does_not_import_torch():
    r = run_python("import sys, fastadagrad; print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_mlp_100_steps_matches_torch(backend_name):
    x, y = data()
    m_ours, m_torch = mlp(), mlp()
    opt_ours = ft.Adagrad(m_ours.parameters(), lr=0.05)
    opt_torch = torch.optim.Adagrad(m_torch.parameters(), lr=0.05)
    with fastadagrad.backend(backend_name):
        train(m_ours, opt_ours, 100, x, y)
    train(m_torch, opt_torch, 100, x, y)
    assert_close_run(m_ours.parameters(), m_torch.parameters())
    ps_o, ps_t = list(m_ours.parameters()), list(m_torch.parameters())
    assert_close_run(state_tensors(opt_ours, ps_o)[0], state_tensors(opt_torch, ps_t)[0])
    assert [float(s) for s in state_tensors(opt_ours, ps_o)[1]] == [100.0] * 4
    # everything was taken by the fast path
    assert all(len(plan.records) == 4 and not plan.slow for plan in opt_ours._plans)


@pytest.mark.parametrize("fused", [None, True])
def test_each_step_matches_torch_from_the_same_state(fused):
    """Re-synced every step: ours from torch's state, with the same grads."""
    x, y = data()
    m_ours, m_torch = mlp(), mlp()
    ps_o, ps_t = list(m_ours.parameters()), list(m_torch.parameters())
    cfg = dict(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)
    opt_ours = ft.Adagrad(ps_o, **cfg)
    opt_torch = torch.optim.Adagrad(ps_t, fused=fused, **cfg)
    for _ in range(30):
        loss = nn.functional.mse_loss(m_torch(x), y)
        loss.backward()
        with torch.no_grad():
            for po, pt in zip(ps_o, ps_t):
                po.copy_(pt)
                po.grad = pt.grad.clone()
                opt_ours.state[po]["sum"].copy_(opt_torch.state[pt]["sum"])
        before = [pt.detach().numpy().copy() for pt in ps_t]
        opt_torch.step()
        opt_ours.step()
        for po, pt, b in zip(ps_o, ps_t, before):
            assert_step_close(po.detach().numpy(), pt.detach().numpy(), b)
            assert float(opt_ours.state[po]["step"]) == float(opt_torch.state[pt]["step"])
        opt_torch.zero_grad()
        opt_ours.zero_grad()


def test_updates_in_place_through_zero_copy_views():
    p = nn.Parameter(torch.randn(50, 20))
    p.grad = torch.randn(50, 20)
    opt = ft.Adagrad([p], lr=0.1)
    ptr, sum_ptr, before = p.data_ptr(), opt.state[p]["sum"].data_ptr(), p.detach().clone()
    opt.step()
    plan = opt._plans[0]
    assert np.shares_memory(plan.records[0].param_view, p.detach().numpy())
    assert np.shares_memory(plan.records[0].sum_view, opt.state[p]["sum"].numpy())
    assert np.shares_memory(plan.records[0].step_view, opt.state[p]["step"].numpy())
    assert p.data_ptr() == ptr and opt.state[p]["sum"].data_ptr() == sum_ptr
    assert not torch.equal(p.detach(), before)
    assert float(opt.state[p]["step"]) == 1.0
    if compiled_available():
        assert plan.all_table is not None   # one C call for the group


def test_closure_runs_with_grad_and_returns_loss():
    x, y = data()
    m_ours, m_torch = mlp(), mlp()
    opt_ours = ft.Adagrad(m_ours.parameters(), lr=0.05)
    opt_torch = torch.optim.Adagrad(m_torch.parameters(), lr=0.05)

    def closure_for(model, opt):
        def closure():
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            assert torch.is_grad_enabled()
            loss.backward()
            return loss
        return closure

    for _ in range(5):
        with torch.no_grad():   # step() enables grad for the closure, as torch does
            lo = opt_ours.step(closure_for(m_ours, opt_ours))
        lt = opt_torch.step(closure_for(m_torch, opt_torch))
        assert lo is not None and abs(lo.item() - lt.item()) <= 1e-5 * abs(lt.item())
    assert_close_run(m_ours.parameters(), m_torch.parameters())
    assert opt_ours.step() is None


# ----------------------------------------------------------------------------- options
def test_options_and_two_param_groups_match_torch():
    torch.manual_seed(3)
    shapes = [(6, 5), (5,), (4, 3), (3,)]
    init = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(40)]

    def run(cls):
        ps = [nn.Parameter(t.clone()) for t in init]
        opt = cls([{"params": ps[:2], "lr": 0.1, "maximize": True, "lr_decay": 0.05},
                   {"params": ps[2:], "weight_decay": 0.1, "eps": 1e-6}],
                  lr=0.03, initial_accumulator_value=0.2)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        return ps, opt

    ps_o, opt_o = run(ft.Adagrad)
    ps_t, opt_t = run(torch.optim.Adagrad)
    assert_close_run(ps_o, ps_t)
    assert_close_run(state_tensors(opt_o, ps_o)[0], state_tensors(opt_t, ps_t)[0])
    assert [g["lr"] for g in opt_o.param_groups] == [0.1, 0.03]


def test_lr_scheduler_and_step_hooks():
    x, y = data()
    m_ours, m_torch = mlp(), mlp()
    opt_ours = ft.Adagrad(m_ours.parameters(), lr=0.1)
    opt_torch = torch.optim.Adagrad(m_torch.parameters(), lr=0.1)
    sched_o = torch.optim.lr_scheduler.StepLR(opt_ours, step_size=3, gamma=0.5)
    sched_t = torch.optim.lr_scheduler.StepLR(opt_torch, step_size=3, gamma=0.5)
    calls = []
    h1 = opt_ours.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    h2 = opt_ours.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    for i in range(10):
        for model, opt, sched in ((m_ours, opt_ours, sched_o), (m_torch, opt_torch, sched_t)):
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        if i == 4:
            h1.remove()
            h2.remove()
    assert calls == ["pre", "post"] * 5
    assert opt_ours.param_groups[0]["lr"] == opt_torch.param_groups[0]["lr"] == 0.1 * 0.5 ** 3
    assert_close_run(m_ours.parameters(), m_torch.parameters())


def test_grad_none_is_skipped_and_mixed_step_counts():
    """A param without grad keeps its state and step; later the group holds different step
    values, each with its own clr (lr_decay makes that visible)."""
    torch.manual_seed(4)
    init = [torch.randn(8, 3), torch.randn(3), torch.randn(7)]
    grads = [[torch.randn_like(t) for t in init] for _ in range(12)]

    def run(cls):
        ps = [nn.Parameter(t.clone()) for t in init]
        opt = cls(ps, lr=0.1, lr_decay=0.2)
        for k, gs in enumerate(grads):
            for j, (p, g) in enumerate(zip(ps, gs)):
                # param 1 has no grad for the first 5 steps, param 2 every other step
                skip = (j == 1 and k < 5) or (j == 2 and k % 2)
                p.grad = None if skip else g.clone()
            opt.step()
            if k == 0:
                assert torch.equal(ps[1].detach(), init[1])
                assert float(opt.state[ps[1]]["step"]) == 0.0
                assert torch.equal(opt.state[ps[1]]["sum"], torch.zeros(3))
        return ps, opt

    ps_o, opt_o = run(ft.Adagrad)
    ps_t, opt_t = run(torch.optim.Adagrad)
    assert [float(opt_o.state[p]["step"]) for p in ps_o] == [12.0, 7.0, 6.0]
    assert [float(opt_t.state[p]["step"]) for p in ps_t] == [12.0, 7.0, 6.0]
    assert_close_run(ps_o, ps_t)


def test_float64_matches_torch():
    x, y = data(dtype=torch.float64)
    m_ours, m_torch = mlp(dtype=torch.float64), mlp(dtype=torch.float64)
    opt_ours = ft.Adagrad(m_ours.parameters(), lr=0.05, weight_decay=1e-3)
    opt_torch = torch.optim.Adagrad(m_torch.parameters(), lr=0.05, weight_decay=1e-3)
    train(m_ours, opt_ours, 50, x, y)
    train(m_torch, opt_torch, 50, x, y)
    assert_close_run(m_ours.parameters(), m_torch.parameters(), rtol=1e-12)
    assert opt_ours.state[next(m_ours.parameters())]["sum"].dtype == torch.float64


def test_step_counter_is_torchs_float32_and_stops_at_2_pow_24():
    p, q = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(4))
    ours, theirs = ft.Adagrad([p], lr=0.1, lr_decay=1e-3), torch.optim.Adagrad([q], lr=0.1, lr_decay=1e-3)
    for opt, t in ((ours, p), (theirs, q)):
        opt.state[t]["step"].fill_(2.0 ** 24 - 1)
        for _ in range(3):
            t.grad = torch.full((4,), 0.5)
            opt.step()
    assert ours.state[p]["step"].dtype == torch.float32
    assert float(ours.state[p]["step"]) == float(theirs.state[q]["step"]) == 2.0 ** 24
    np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-6)


def test_step_counter_follows_torch_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        p = nn.Parameter(torch.ones(3))
        opt = ft.Adagrad([p])
        assert opt.state[p]["step"].dtype == torch.float64
        p.grad = torch.ones(3)
        opt.step()
        assert float(opt.state[p]["step"]) == 1.0
    finally:
        torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------- layouts
def test_non_contiguous_parameters_updated_in_place():
    torch.manual_seed(5)
    base = torch.randn(12, 10)
    grads = [(torch.randn(10, 12), torch.randn(12, 5)) for _ in range(20)]

    def run(cls):
        b = base.clone()
        transposed = nn.Parameter(torch.randn(12, 10).t())   # F-contiguous: still one C call
        strided = nn.Parameter(b[:, ::2])                     # a real strided view of `b`
        assert not transposed.is_contiguous() and not strided.is_contiguous()
        opt = cls([transposed, strided], lr=0.1)
        ptrs = (transposed.data_ptr(), strided.data_ptr())
        for g1, g2 in grads:
            transposed.grad, strided.grad = g1.clone(), g2.clone()
            opt.step()
        assert (transposed.data_ptr(), strided.data_ptr()) == ptrs
        assert torch.equal(b[:, 1::2], base[:, 1::2])   # the other columns untouched
        assert torch.equal(b[:, ::2], strided.detach())  # the update landed in `b` itself
        return [transposed, strided], opt

    torch.manual_seed(6)
    ps_o, opt_o = run(ft.Adagrad)
    torch.manual_seed(6)
    ps_t, _ = run(torch.optim.Adagrad)
    assert_close_run(ps_o, ps_t)
    plan = opt_o._plans[0]
    assert fast_params(plan) == ps_o and tableable(plan) == [True, False]


def test_param_data_replaced_rebuilds_the_views():
    p, q = nn.Parameter(torch.randn(6)), nn.Parameter(torch.randn(6))
    ours, theirs = ft.Adagrad([p], lr=0.1), torch.optim.Adagrad([q], lr=0.1)
    for step in range(6):
        if step == 3:
            new = torch.randn(6)
            p.data, q.data = new.clone(), new.clone()
        p.grad = torch.full((6,), 0.3)
        q.grad = torch.full((6,), 0.3)
        ours.step()
        theirs.step()
    np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-6)
    assert np.shares_memory(ours._plans[0].records[0].param_view, p.detach().numpy())


def test_autograd_sees_the_in_place_update():
    """Like torch's own in-place update, stepping a param that backward still needs raises."""
    for cls in (torch.optim.Adagrad, ft.Adagrad):
        p = nn.Parameter(torch.randn(4))
        opt = cls([p])
        loss = (p * p).sum()
        p.grad = torch.ones(4)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


# ----------------------------------------------------------------------------- fallbacks
@pytest.mark.parametrize("foreach", [None, True])
def test_complex_falls_back_to_torch_exactly(foreach):
    """(float16/bfloat16 take the fast path: tests/test_mixed_precision_torch.py.)"""
    torch.manual_seed(7)
    init_c, init32 = torch.randn(20, dtype=torch.complex64), torch.randn(9)
    grads = [(torch.randn(20, dtype=torch.complex64), torch.randn(9)) for _ in range(10)]

    def run(cls):
        h, f = nn.Parameter(init_c.clone()), nn.Parameter(init32.clone())
        opt = cls([h, f], lr=0.05, weight_decay=0.01, foreach=foreach)
        for k, (gh, gf) in enumerate(grads):
            h.grad, f.grad = (None if k == 3 else gh.clone()), gf.clone()
            opt.step()
        return h, f, opt

    h_o, f_o, opt_o = run(ft.Adagrad)
    h_t, f_t, opt_t = run(torch.optim.Adagrad)
    assert opt_o._plans[0].slow == [h_o] and fast_params(opt_o._plans[0]) == [f_o]
    assert same_bytes(h_o, h_t) and same_bytes(opt_o.state[h_o]["sum"], opt_t.state[h_t]["sum"])
    assert_close_run([f_o], [f_t])


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_sparse_grad_goes_to_the_sparse_kernel():
    """nn.Embedding(sparse=True): the COO grad's rows go to our sparse kernel (duplicates summed
    before squaring, as torch's coalesce does). torch computes p + (-clr) * (g / std) where we
    compute p - (clr * g) / std, so the parameters agree to a few ulps, not bit for bit; the
    two fastadagrad backends agree bit for bit."""
    def run(cls, backend_name="cython"):
        torch.manual_seed(8)
        emb = nn.Embedding(30, 4, sparse=True)
        opt = cls(emb.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(9)
        with fastadagrad.backend(backend_name):
            for _ in range(8):
                idx = torch.randint(0, 30, (12,), generator=g)   # duplicates included
                emb(idx).pow(2).sum().backward()
                assert emb.weight.grad.is_sparse
                opt.step()
                opt.zero_grad()
        return emb.weight, opt

    w_o, opt_o = run(ft.Adagrad)
    w_t, opt_t = run(torch.optim.Adagrad)
    assert ft.accelerated(w_o)
    torch.testing.assert_close(w_o, w_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(opt_o.state[w_o]["sum"], opt_t.state[w_t]["sum"].to_dense(),
                               rtol=1e-5, atol=1e-6)
    assert float(opt_o.state[w_o]["step"]) == 8.0
    if fastadagrad.compiled_available():
        w_n, opt_n = run(ft.Adagrad, "numpy")
        assert same_bytes(w_o, w_n) and same_bytes(opt_o.state[w_o]["sum"], opt_n.state[w_n]["sum"])


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_sparse_grad_with_weight_decay_is_torchs_error():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = ft.Adagrad(emb.parameters(), lr=0.1, weight_decay=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="weight_decay"):
        opt.step()


def test_differentiable_group_falls_back_to_torch():
    p = torch.randn(5)   # plain tensors (torch refuses in-place updates of leaves needing grad)
    q = p.clone()
    ours = ft.Adagrad([p], lr=0.1, differentiable=True)
    theirs = torch.optim.Adagrad([q], lr=0.1, differentiable=True)
    for _ in range(3):
        p.grad = torch.full((5,), 0.2)
        q.grad = torch.full((5,), 0.2)
        ours.step()
        theirs.step()
    assert ours._plans[0].slow == [p] and not ours._plans[0].records
    assert same_bytes(p, q)


def test_cuda_absent_is_fine_and_other_devices_route_to_torch():
    p = nn.Parameter(torch.randn(5))
    opt = ft.Adagrad([p])   # no CUDA needed (or used) for CPU params
    p.grad = torch.ones(5)
    opt.step()
    assert float(opt.state[p]["step"]) == 1.0
    # the routing decision: only dense CPU float32/float64/float16 (and bfloat16 with
    # ml_dtypes) tensors are accelerated
    assert ft.accelerated(p) and ft.accelerated(torch.randn(2, dtype=torch.float64))
    assert ft.accelerated(torch.randn(3).half())
    meta = nn.Parameter(torch.randn(5, device="meta"))
    for other in (meta, torch.randn(3, dtype=torch.complex64), torch.randn(3, 3).to_sparse()):
        assert not ft.accelerated(other)
    if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
        assert not ft.accelerated(torch.randn(3, device="cuda"))
    # a meta param steps through torch (as torch.optim.Adagrad does)
    opt = ft.Adagrad([meta, p])
    meta.grad = torch.randn(5, device="meta")
    opt.step()
    assert opt._plans[0].slow == [meta] and fast_params(opt._plans[0]) == [p]


def test_fused_amp_grad_scaler_goes_through_torch():
    x, y = data()

    def run(cls):
        model = mlp()
        opt = cls(model.parameters(), lr=0.05, fused=True)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        for _ in range(5):
            scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        return list(model.parameters())

    for a, b in zip(run(ft.Adagrad), run(torch.optim.Adagrad)):
        assert same_bytes(a, b)


# ----------------------------------------------------------------------------- state
def roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_state_dict_cross_loading_then_training_matches(direction):
    x, y = data()
    first_cls, second_cls = ((torch.optim.Adagrad, ft.Adagrad) if direction == "torch->ours"
                             else (ft.Adagrad, torch.optim.Adagrad))
    cfg = dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1)
    model = mlp()
    opt = first_cls(model.parameters(), **cfg)
    train(model, opt, 20, x, y)
    checkpoint = roundtrip({"model": model.state_dict(), "opt": opt.state_dict()})

    # continue with the other class, and (reference) with torch
    resumed, reference_model = mlp(seed=11), mlp(seed=12)
    resumed.load_state_dict(checkpoint["model"])
    reference_model.load_state_dict(checkpoint["model"])
    opt2 = second_cls(resumed.parameters(), lr=1.0)          # group options come from the file
    opt2.load_state_dict(checkpoint["opt"])
    opt_ref = torch.optim.Adagrad(reference_model.parameters(), lr=1.0)
    opt_ref.load_state_dict(roundtrip(checkpoint["opt"]))
    assert opt2.param_groups[0]["lr"] == 0.05
    for p in resumed.parameters():
        assert float(opt2.state[p]["step"]) == 20.0
        assert opt2.state[p]["step"].dtype == torch.float32
    train(resumed, opt2, 30, x, y)
    train(reference_model, opt_ref, 30, x, y)
    assert_close_run(resumed.parameters(), reference_model.parameters())
    if isinstance(opt2, ft.Adagrad):
        # the views now live in the loaded tensors
        for p, sv in ((r.param, r.sum_view) for r in opt2._plans[0].records):
            assert np.shares_memory(sv, opt2.state[p]["sum"].numpy())
        assert [float(opt2.state[p]["step"]) for p in resumed.parameters()] == [50.0] * 4


def test_load_state_dict_mid_training_replaces_the_state_views():
    x, y = data()
    model = mlp()
    opt = ft.Adagrad(model.parameters(), lr=0.05)
    train(model, opt, 5, x, y)
    saved = roundtrip(opt.state_dict())
    old_views = [r.sum_view for r in opt._plans[0].records]
    train(model, opt, 5, x, y)
    opt.load_state_dict(saved)
    assert opt._plans is None
    train(model, opt, 1, x, y)
    p0 = next(model.parameters())
    assert float(opt.state[p0]["step"]) == 6.0
    assert not np.shares_memory(opt._plans[0].records[0].sum_view, old_views[0])


def test_add_param_group_lazy_state_like_torch():
    torch.manual_seed(10)
    a0, b0 = torch.randn(4), torch.randn(3)
    grads = [(torch.randn(4), torch.randn(3)) for _ in range(6)]

    def run(cls):
        a, b = nn.Parameter(a0.clone()), nn.Parameter(b0.clone())
        opt = cls([a], lr=0.1, initial_accumulator_value=0.5)
        for k, (ga, gb) in enumerate(grads):
            if k == 2:
                opt.add_param_group({"params": [b], "lr": 0.2, "initial_accumulator_value": 3.0})
                assert len(opt.state[b]) == 0   # torch creates it lazily, at the first grad
            a.grad, b.grad = ga.clone(), (gb.clone() if k >= 2 else None)
            opt.step()
        return a, b, opt

    a_o, b_o, opt_o = run(ft.Adagrad)
    a_t, b_t, opt_t = run(torch.optim.Adagrad)
    assert_close_run([a_o, b_o], [a_t, b_t])
    assert float(opt_o.state[b_o]["step"]) == 4.0
    # torch's lazy init uses the optimizer's default (0.5), not the group's (3.0): matched
    assert_close_run([opt_o.state[b_o]["sum"]], [opt_t.state[b_t]["sum"]])
    assert fast_params(opt_o._plans[1]) == [b_o]


def test_pickle_deepcopy_and_share_memory():
    x, y = data()
    model = mlp()
    opt = ft.Adagrad(model.parameters(), lr=0.05)
    train(model, opt, 3, x, y)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone._plans is None and float(next(iter(clone.state.values()))["step"]) == 3.0
    copy.deepcopy(opt)
    opt.share_memory()
    assert opt._plans is None
    train(model, opt, 2, x, y)
    for p, sv in ((r.param, r.sum_view) for r in opt._plans[0].records):
        assert opt.state[p]["sum"].is_shared() and np.shares_memory(sv, opt.state[p]["sum"].numpy())


# ----------------------------------------------------------------------------- backends
def test_numpy_backend_gives_the_same_bytes_as_cython():
    if not compiled_available():
        pytest.skip("compiled extension not built")
    torch.manual_seed(12)
    init = [torch.randn(9, 7), torch.randn(7, 9).t(), torch.randn(4, 8), torch.randn(5).double()]
    shapes = [(9, 7), (9, 7), (4, 4), (5,)]
    grads = [[torch.randn(s, dtype=t.dtype) for s, t in zip(shapes, init)] for _ in range(15)]

    def run(backend_name, cls=ft.Adagrad):
        # contiguous, transposed (F-contiguous), a strided view of a buffer, float64
        ps = [nn.Parameter(init[0].clone()), nn.Parameter(init[1].clone()),
              nn.Parameter(init[2].clone()[:, ::2]), nn.Parameter(init[3].clone())]
        assert ps[1].stride() == (1, 9) and not ps[2].is_contiguous()
        # group 0 mixes float32 and float64 and layouts; param 0 skips every third step
        opt = cls([{"params": [ps[0], ps[1], ps[3]]}, {"params": [ps[2]], "maximize": True}],
                  lr=0.1, lr_decay=0.05, weight_decay=0.01)
        with fastadagrad.backend(backend_name):
            for k, gs in enumerate(grads):
                for j, (p, g) in enumerate(zip(ps, gs)):
                    p.grad = None if (j == 0 and k % 3 == 0) else g.clone()
                opt.step()
        return ps, opt

    ps_c, opt_c = run("cython")
    ps_n, opt_n = run("numpy")
    for a, b in zip(ps_c, ps_n):
        assert same_bytes(a, b)
        assert same_bytes(opt_c.state[a]["sum"], opt_n.state[b]["sum"])
        assert same_bytes(opt_c.state[a]["step"], opt_n.state[b]["step"])
    assert [float(opt_c.state[p]["step"]) for p in ps_c] == [10.0, 15.0, 15.0, 15.0]
    if compiled_available():
        assert tableable(opt_c._plans[0]) == [True, True, True] and tableable(opt_c._plans[1]) == [False]
    ps_t, _ = run("numpy", torch.optim.Adagrad)
    assert_close_run(ps_c, ps_t)


# ----------------------------------------------------------------------------- odd inputs
def test_odd_grad_layouts_and_a_grad_aliasing_its_param():
    """Grads the one-call gate refuses (other layout, zero strides, aliasing the param) take
    the validated per-array path; the result is torch's."""
    torch.manual_seed(13)
    init = [torch.randn(4, 5), torch.randn(6), torch.randn(3)]

    def run(cls):
        ps = [nn.Parameter(t.clone()) for t in init]
        opt = cls(ps, lr=0.1)
        for k in range(6):
            ps[0].grad = torch.randn(5, 4, generator=torch.Generator().manual_seed(k)).t()
            ps[1].grad = torch.full((1,), 0.1 * (k + 1)).expand(6)
            ps[2].grad = ps[2].detach()          # the grad IS the param's memory
            opt.step()
        return ps

    assert_close_run(run(ft.Adagrad), run(torch.optim.Adagrad))


def test_overlapping_params_are_updated_one_after_the_other():
    def run(cls):
        buf = torch.arange(10, dtype=torch.float32)
        a, b = nn.Parameter(buf[:6]), nn.Parameter(buf[4:])   # share buf[4:6]
        opt = cls([a, b], lr=0.1, foreach=False)
        for k in range(4):
            a.grad, b.grad = torch.full((6,), 0.5 + k), torch.full((6,), -0.25 - k)
            opt.step()
        return buf

    ours, theirs = run(ft.Adagrad), run(torch.optim.Adagrad)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_tensor_lr_and_a_pre_hook_that_rewrites_the_arguments():
    x, y = data()
    m_ours, m_torch = mlp(), mlp()
    opt_ours = ft.Adagrad(m_ours.parameters(), lr=torch.tensor(0.05))
    opt_torch = torch.optim.Adagrad(m_torch.parameters(), lr=torch.tensor(0.05))
    seen = []

    def closure():
        seen.append(1)
        return torch.tensor(1.0)

    opt_ours.register_step_pre_hook(lambda opt, args, kwargs: ((args[0],), {"closure": closure}))
    train(m_ours, opt_ours, 10, x, y)
    train(m_torch, opt_torch, 10, x, y)
    assert seen == [1] * 10
    assert_close_run(m_ours.parameters(), m_torch.parameters())
    opt_ours.param_groups[0]["lr"].fill_(0.0)   # changed in place: re-read every step
    before = [p.detach().clone() for p in m_ours.parameters()]
    train(m_ours, opt_ours, 1, x, y)
    assert all(torch.equal(b, p) for b, p in zip(before, m_ours.parameters()))


def test_state_entries_replaced_by_hand_are_followed():
    p, q = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(5))
    q.data.copy_(p.data)
    ours, theirs = ft.Adagrad([p], lr=0.1), torch.optim.Adagrad([q], lr=0.1)
    for k in range(6):
        if k == 3:
            for opt, t in ((ours, p), (theirs, q)):
                opt.state[t]["sum"] = opt.state[t]["sum"].clone() + 1.0
                opt.state[t]["step"] = torch.tensor(10.0)
        p.grad, q.grad = torch.full((5,), 0.2), torch.full((5,), 0.2)
        ours.step()
        theirs.step()
    assert float(ours.state[p]["step"]) == float(theirs.state[q]["step"]) == 13.0
    assert np.shares_memory(ours._plans[0].records[0].sum_view, ours.state[p]["sum"].numpy())
    np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.state[p]["sum"].numpy(), theirs.state[q]["sum"].numpy(), rtol=1e-6)


def test_group_edited_in_place_is_followed():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = ft.Adagrad([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    opt.step()
    opt.param_groups[0]["params"] = [a]          # b is no longer optimized
    opt.step()
    assert float(opt.state[a]["step"]) == 2.0 and float(opt.state[b]["step"]) == 1.0
    assert fast_params(opt._plans[0]) == [a]
    opt.param_groups[0]["differentiable"] = True  # now torch's own path
    opt.step()
    assert opt._plans[0].slow == [a] and float(opt.state[a]["step"]) == 3.0
