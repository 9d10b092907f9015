"""Run by tests/test_torch_distributed.py (not collected by pytest itself):

    python tests/torch_dist_worker.py ddp,zero,fsdp2 PORT TMPDIR

spawns 2 processes (once, for all the engines listed) (gloo, CPU, 127.0.0.1:PORT) that train a small MLP for 20 steps with
fastadagrad.torch.Adagrad and with torch.optim.Adagrad under the engine, and compare after every
step: each step of ours against one torch step from the same state and grads (the per-step
bound of tests/test_torch_dropin.py: 1 ulp of the param plus 4 ulps of the step); the whole
runs against each other (the independent-run tolerance there, rtol 1e-4 of each tensor's
scale), and against one process training on the whole batch. Also:
no parameter falls back to torch's implementation, the replicas agree bit for bit, and a
checkpoint saved mid-run and loaded into fresh objects continues bit-identically. Any failure
raises in a rank: torch.multiprocessing.spawn then exits non-zero.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastadagrad.torch as ft

WORLD, STEPS, HALF = 2, 20, 10
nn = torch.nn
HYPER = dict(lr=0.05, lr_decay=0.01, weight_decay=0.001, initial_accumulator_value=0.1)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 33), nn.Tanh(), nn.Linear(33, 1))   # 33: uneven shards


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 10, generator=g), torch.randn(64, 1, generator=g)


def batch(rank: int):
    x, y = data()
    n = x.shape[0] // WORLD
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def close(ours, theirs, what: str, rtol: float = 1e-4) -> None:
    """Independent runs: within rtol of each other, relative to each tensor's scale."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        scale = max(float(np.abs(b).max()), 1e-30)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"{what}, tensor {i}")


def identical(ours, theirs, what: str) -> None:
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape and a.tobytes() == b.tobytes(), f"{what}: tensor {i} differs"


def single_process_run() -> list[list[np.ndarray]]:
    """fastadagrad.torch.Adagrad on the whole batch in one process: params after each step."""
    model, (x, y) = mlp(), data()
    opt = ft.Adagrad(model.parameters(), **HYPER)
    out = []
    for _ in range(STEPS):
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        out.append([p.detach().numpy().copy() for p in model.parameters()])
    return out


def count_fallbacks(opt: torch.optim.Optimizer) -> list[int]:
    """Count the params that fastadagrad.torch.Adagrad hands to torch's implementation."""
    calls = [0]
    if isinstance(opt, ft.Adagrad):
        inner = opt._torch_step

        def counting(group, params):
            calls[0] += len(params)
            return inner(group, params)
        opt._torch_step = counting
    return calls


def replicas_agree(arrays: list[np.ndarray], what: str) -> None:
    mine = b"".join(a.tobytes() for a in arrays)
    every = [None] * WORLD
    dist.all_gather_object(every, mine)
    assert all(e == every[0] for e in every), f"{what}: the ranks' replicas differ"


def local_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.to_local() if type(t).__name__ == "DTensor" else t).numpy().copy()


class TorchTwin:
    """The per-step check of tests/test_torch_dropin.py, on the engine's own grads: before our
    local optimizer steps, a torch.optim.Adagrad over copies of its params, grads and state;
    after, one torch step from that same state, and ours must be within 1 ulp of the param
    plus 4 ulps of the step (the bound of test_torch_compat)."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        self.before = [local_numpy(p) for p in self.params]
        self.clones = []
        for p in self.params:
            c = p.detach().clone().requires_grad_(True)
            c.grad = p.grad.detach().clone()
            self.clones.append(c)
        self.twin = torch.optim.Adagrad(self.clones, **HYPER)
        sd = opt.state_dict()
        ids = [i for g in sd["param_groups"] for i, p in zip(g["params"],
               [p for og in opt.param_groups for p in og["params"]]) if p.grad is not None]
        # copies: load_state_dict would alias tensors of the right dtype and device
        state = {k: {n: v.clone() for n, v in sd["state"][i].items()} for k, i in enumerate(ids)}
        self.twin.load_state_dict({"state": state,
                                   "param_groups": [dict(sd["param_groups"][0],
                                                         params=list(range(len(ids))))]})

    def check(self, what: str) -> None:
        self.twin.step()
        for p, c, b in zip(self.params, self.clones, self.before):
            x, t = local_numpy(p), local_numpy(c)
            bound = np.spacing(np.abs(t)) + 4 * np.finfo(t.dtype).eps * np.abs(t - b)
            assert np.all(np.abs(x - t) <= bound), f"{what}: one step differs from torch's"


def train(model, opt, rank: int, steps: int, full=lambda ps: [p.detach().numpy().copy()
                                                                 for p in ps], local=None):
    """`steps` steps on this rank's half of the batch; the params after each. With `local`
    (our optimizer on this rank), every step is also checked against torch's step."""
    x, y = batch(rank)
    out = []
    for step in range(steps):
        nn.functional.mse_loss(model(x), y).backward()
        twin = TorchTwin(local) if local is not None else None
        opt.step()
        if twin is not None:
            twin.check(f"step {step + 1}")
        opt.zero_grad()
        out.append(full(list(model.parameters())))
    return out


def check_runs(ours, theirs, reference, what: str) -> None:
    for step, (a, b, r) in enumerate(zip(ours, theirs, reference), 1):
        close(a, b, f"{what}: fastadagrad vs torch.optim.Adagrad after step {step}")
        close(a, r, f"{what}: 2 ranks vs one process after step {step}")


# ---------------------------------------------------------------------------------- DDP
def ddp(rank: int, tmp: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP
    reference = single_process_run()
    runs = {}
    for cls in (ft.Adagrad, torch.optim.Adagrad):
        model = DDP(mlp())
        opt = cls(model.parameters(), **HYPER)
        fallbacks = count_fallbacks(opt)
        runs[cls] = train(model, opt, rank, STEPS, local=opt if cls is ft.Adagrad else None)
        assert fallbacks[0] == 0, f"DDP: {fallbacks[0]} params fell back to torch"
        replicas_agree(runs[cls][-1], f"DDP {cls.__module__}")
    check_runs(runs[ft.Adagrad], runs[torch.optim.Adagrad], reference, "DDP")


# ---------------------------------------------------------------------------------- ZeRO
def zero(rank: int, tmp: str) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer as ZeRO
    from torch.nn.parallel import DistributedDataParallel as DDP
    reference = single_process_run()
    for bucket_view in (False, True):
        what = f"ZeRO(parameters_as_bucket_view={bucket_view})"
        runs = {}
        for cls in (ft.Adagrad, torch.optim.Adagrad):
            model = DDP(mlp())
            opt = ZeRO(model.parameters(), optimizer_class=cls,
                       parameters_as_bucket_view=bucket_view, **HYPER)
            fallbacks = count_fallbacks(opt.optim)
            runs[cls] = train(model, opt, rank, HALF,
                              local=opt.optim if cls is ft.Adagrad else None)
            if cls is ft.Adagrad:   # a sharded checkpoint, loaded into fresh objects
                assert len(opt.optim.state) < 4, "the optimizer state is not sharded"
                opt.consolidate_state_dict(to=0)
                path = os.path.join(tmp, f"zero-{bucket_view}.pt")
                if rank == 0:
                    torch.save({"model": model.module.state_dict(), "optim": opt.state_dict()}, path)
                dist.barrier()
                ckpt = torch.load(path, weights_only=False)
                model2 = DDP(mlp())
                model2.module.load_state_dict(ckpt["model"])
                opt2 = ZeRO(model2.parameters(), optimizer_class=cls,
                            parameters_as_bucket_view=bucket_view, **HYPER)
                opt2.load_state_dict(ckpt["optim"])
                resumed = train(model2, opt2, rank, HALF)
            runs[cls] += train(model, opt, rank, HALF)
            assert fallbacks[0] == 0, f"{what}: {fallbacks[0]} params fell back to torch"
            replicas_agree(runs[cls][-1], what)
        for step in range(HALF):
            identical(resumed[step], runs[ft.Adagrad][HALF + step],
                      f"{what}: resumed from the checkpoint, step {HALF + step + 1}")
        check_runs(runs[ft.Adagrad], runs[torch.optim.Adagrad], reference, what)


# ---------------------------------------------------------------------------------- FSDP2
def fsdp2(rank: int, tmp: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    def sharded() -> nn.Module:
        model = mlp()
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        return fully_shard(model)

    def full(ps):
        return [p.full_tensor().detach().numpy().copy() for p in ps]

    reference = single_process_run()
    runs = {}
    for cls in (ft.Adagrad, torch.optim.Adagrad):
        model = sharded()
        opt = cls(model.parameters(), **HYPER)
        assert all(type(p).__name__ == "DTensor" for p in model.parameters())
        fallbacks = count_fallbacks(opt)
        runs[cls] = train(model, opt, rank, HALF, full, local=opt if cls is ft.Adagrad else None)
        if cls is ft.Adagrad:   # DCP: every rank saves its shards, fresh objects load them
            msd, osd = get_state_dict(model, opt)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(tmp, "fsdp2"))
            model2 = sharded()
            opt2 = cls(model2.parameters(), **HYPER)
            msd2, osd2 = get_state_dict(model2, opt2)
            state = {"model": msd2, "optim": osd2}
            dcp.load(state, checkpoint_id=os.path.join(tmp, "fsdp2"))
            set_state_dict(model2, opt2, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])
            resumed = train(model2, opt2, rank, HALF, full)
        runs[cls] += train(model, opt, rank, HALF, full)
        assert fallbacks[0] == 0, f"FSDP2: {fallbacks[0]} DTensor params fell back to torch"
    for step in range(HALF):
        identical(resumed[step], runs[ft.Adagrad][HALF + step],
                  f"FSDP2: resumed from the checkpoint, step {HALF + step + 1}")
    check_runs(runs[ft.Adagrad], runs[torch.optim.Adagrad], reference, "FSDP2")
    placements(rank)


def placements(rank: int) -> None:
    """DTensor params outside FSDP2: Replicate is accelerated (within the tolerance of torch);
    Partial (sums not yet reduced, where a local element-wise update would be wrong) is routed
    to torch's step, which refuses it: ours raises torch's very error."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor
    mesh = init_device_mesh("cpu", (WORLD,))
    g = torch.Generator().manual_seed(4)
    base, grad = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    results, errors = [], []
    for cls in (ft.Adagrad, torch.optim.Adagrad):
        p = nn.Parameter(distribute_tensor(base.clone(), mesh, [Replicate()]))
        p.grad = distribute_tensor(grad.clone(), mesh, [Replicate()])
        opt = cls([p], **HYPER)
        fallbacks = count_fallbacks(opt)
        for _ in range(3):
            opt.step()
        assert fallbacks[0] == 0, f"DTensor Replicate: {fallbacks[0]} fell back to torch"
        results.append([p.full_tensor().detach().numpy().copy()])

        q = nn.Parameter(DTensor.from_local(base.clone() / WORLD, mesh, [Partial()]))
        q.grad = DTensor.from_local(grad.clone() / WORLD, mesh, [Partial()])
        opt = cls([q], **HYPER)
        fallbacks = count_fallbacks(opt)
        try:
            opt.step()
        except RuntimeError as exc:
            errors.append(str(exc).splitlines()[0])
        else:
            errors.append("no error")
        assert cls is not ft.Adagrad or fallbacks[0] == 1, "DTensor Partial was not routed"
    close(results[0], results[1], "DTensor Replicate")
    assert errors[0] == errors[1] and "Partial" in errors[0], errors


def run(rank: int, mode: str, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for engine in mode.split(","):
            {"ddp": ddp, "zero": zero, "fsdp2": fsdp2}[engine](rank, tmp)
            dist.barrier()
            if rank == 0:
                print(f"OK {engine} on {WORLD} processes", flush=True)
    finally:
        dist.destroy_process_group()
    # Every check passed: leave without interpreter finalization. Gloo's worker threads can
    # still hold work objects (FSDP2's mesh keeps its groups referenced) and abort the process
    # while Python tears down ("terminate called without an active exception", SIGABRT after
    # all OK lines; pytorch/pytorch PR #179291 describes this teardown). mp.spawn counts an
    # exit code of 0 as success; a failed check above still raises through mp.spawn.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    mode, port, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    mp.spawn(run, args=(mode, port, tmp), nprocs=WORLD)
