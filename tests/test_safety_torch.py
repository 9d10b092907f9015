"""fastadagrad.torch.Adagrad under hostile but legal input (issue 11): strided and expanded
parameters with sparse grads, grads checked before the first write, torch's errors for fused
sparse steps, sparse_dim=2 grads. Whatever is routed to torch must behave exactly as torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

import fastadagrad  # noqa: E402
import fastadagrad.torch as ft  # noqa: E402
from fastadagrad._backend import compiled_available  # noqa: E402

BACKENDS = ["numpy"] + (["cython"] if compiled_available() else [])
nn = torch.nn
# torch's own sparse Adagrad (which some cases here are routed to) warns about this
pytestmark = pytest.mark.filterwarnings(
    "ignore:Sparse invariant checks are implicitly disabled:UserWarning")


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastadagrad.backend(request.param):
        yield request.param


def run_both(make, steps=1):
    """(torch's outcome, ours) for the same params/grads: ("ok", params) or ("error", type, msg)."""
    out = []
    for cls in (torch.optim.Adagrad, ft.Adagrad):
        params, kwargs = make()
        try:
            opt = cls(params, **kwargs)
            for _ in range(steps):
                opt.step()
            out.append(("ok", [p.detach().clone() for p in params],
                        [opt.state[p]["sum"].clone() for p in params]))
        except Exception as exc:  # noqa: BLE001 - compared between the two
            out.append(("error", type(exc), str(exc).split("\n")[0]))
    return out


def test_sparse_grad_on_transposed_param_matches_torch(backend):
    """Issue 11 repro 1.1: with Parameter(randn(8, 1000).t()) the wrong rows changed silently
    (torch updates rows 998 and 999; we changed rows from 984 on)."""
    base = torch.randn(8, 1000, generator=torch.Generator().manual_seed(0))

    def make():
        p = nn.Parameter(base.clone().t())
        p.grad = torch.sparse_coo_tensor([[998, 999, 998]], torch.ones(3, 8), (1000, 8))
        return [p], {}

    ref, ours = run_both(make, steps=2)
    assert ref[0] == ours[0] == "ok"
    assert torch.equal(ref[1][0], ours[1][0]) and torch.equal(ref[2][0], ours[2][0])
    changed = (ours[1][0] != base.t()).any(dim=1).nonzero().flatten().tolist()
    assert changed == [998, 999]


def test_sparse_grad_on_expanded_param_does_as_torch(backend):
    """Issue 11 repro 1.1: an expanded (1, 8) -> (64, 8) param with a sparse grad on row 63
    wrote 8 floats ~2 KB past the parameter. Now it is torch's own path, as torch behaves."""
    def make():
        p = nn.Parameter(torch.zeros(1, 8).expand(64, 8))
        p.grad = torch.sparse_coo_tensor([[63]], torch.ones(1, 8), (64, 8))
        return [p], {}

    ref, ours = run_both(make)
    assert ref[0] == ours[0]
    if ref[0] == "ok":
        assert torch.equal(ref[1][0], ours[1][0]) and torch.equal(ref[2][0], ours[2][0])
    else:
        assert ref[1:] == ours[1:]


def test_dense_grad_on_expanded_param_raises_as_torch(backend):
    """Issue 11 §2: torch raises for an expanded parameter; the drop-in must do the same."""
    def make():
        p = nn.Parameter(torch.zeros(1, 8).expand(64, 8))
        p.grad = torch.ones(64, 8)
        return [p], {}

    ref, ours = run_both(make)
    assert ref[0] == "error" and ours == ref


def test_every_sparse_grad_is_checked_before_the_first_write(backend):
    """Issue 11 §3: with two sparse grads, the second's out-of-range index raised only after
    the first parameter was updated and its step set to 1."""
    e1, e2 = nn.Embedding(10, 4, sparse=True), nn.Embedding(10, 4, sparse=True)
    dense = nn.Parameter(torch.ones(3))
    opt = ft.Adagrad([{"params": [dense]}, {"params": [e1.weight, e2.weight]}], lr=0.1)
    dense.grad = torch.ones(3)
    e1.weight.grad = torch.sparse_coo_tensor([[1, 2]], torch.ones(2, 4), (10, 4))
    e2.weight.grad = torch.sparse_coo_tensor([[3, 10]], torch.ones(2, 4), (10, 4),
                                             check_invariants=False)
    before = [t.detach().clone() for t in (dense, e1.weight, e2.weight)]
    with pytest.raises(ValueError, match=r"`indices\[1\]` = 10 is out of range"):
        opt.step()
    for t, b in zip((dense, e1.weight, e2.weight), before):
        assert torch.equal(t.detach(), b)
    assert all(float(opt.state[p]["step"]) == 0 for p in (dense, e1.weight, e2.weight))
    assert all(not opt.state[p]["sum"].any() for p in (dense, e1.weight, e2.weight))


def test_sparse_dim_2_grad_accepted_as_torch(backend):
    """Issue 11 §4: `dense.to_sparse()` (sparse_dim=2) raised ValueError; torch accepts it."""
    g = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))

    def make():
        p = nn.Parameter(torch.ones(5, 4))
        p.grad = g.to_sparse()
        return [p], {"lr": 0.1}

    ref, ours = run_both(make, steps=2)
    assert ref[0] == ours[0] == "ok"
    assert torch.equal(ref[1][0], ours[1][0]) and torch.equal(ref[2][0], ours[2][0])


def test_fused_with_sparse_grad_raises_torchs_error(backend):
    """Issue 11 §4: fused=True with a sparse grad: torch raises RuntimeError, we ran silently."""
    def make():
        dense = nn.Parameter(torch.ones(3))
        dense.grad = torch.ones(3)
        emb = nn.Parameter(torch.ones(10, 4))
        emb.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, 4), (10, 4))
        return [dense, emb], {"fused": True}

    ref, ours = run_both(make)
    assert ref[0] == "error" and ref[1] is RuntimeError
    assert ours == ref
    # and nothing was written by us
    dense = nn.Parameter(torch.ones(3))
    dense.grad = torch.ones(3)
    emb = nn.Parameter(torch.ones(10, 4))
    emb.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, 4), (10, 4))
    opt = ft.Adagrad([dense, emb], fused=True)
    with pytest.raises(RuntimeError, match="`fused` does not support sparse grad"):
        opt.step()
    assert (dense.detach() == 1).all() and (emb.detach() == 1).all()


def test_sparse_values_aliasing_the_param_use_the_old_values(backend):
    """A sparse grad whose values view the parameter's own rows is read before it is written
    (copied), as torch reads it."""
    def make():
        p = nn.Parameter(torch.arange(40.0).reshape(10, 4))
        p.grad = torch.sparse_coo_tensor([[2, 3]], p.detach()[:2], (10, 4))
        return [p], {"lr": 0.1}

    ref, ours = run_both(make)
    assert ref[0] == ours[0] == "ok"
    np.testing.assert_allclose(ours[1][0].numpy(), ref[1][0].numpy(), rtol=1e-6)
