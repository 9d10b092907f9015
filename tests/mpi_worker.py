"""Run under mpirun by tests/test_distributed_mpi.py (not collected by pytest itself).

    mpirun -np P python tests/mpi_worker.py check          every check at world size P
    mpirun -np P python tests/mpi_worker.py save DIR       3 steps, then save to DIR
    mpirun -np Q python tests/mpi_worker.py load DIR       load DIR (saved by P ranks), 2 steps

Every rank computes the single-process reference itself (every rank's batch is a function of
(step, rank, world size)), so each rank checks its own shard byte for byte. The first failure
prints a traceback and aborts the whole job (non-zero exit, no rank left waiting).
"""

from __future__ import annotations

import sys
import traceback

import numpy as np
from mpi4py import MPI

import fastadagrad
from fastadagrad.distributed import Partition, ShardedEmbedding, ZeroAdaGrad

comm = MPI.COMM_WORLD
RANK, SIZE = comm.rank, comm.size
N_ROWS, DIM = 50, 19   # few rows: duplicates within and across ranks; 19 = 2 x 8 lanes + 3


def same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
        diff = int(np.sum(a != b)) if a.shape == b.shape else -1
        raise AssertionError(f"rank {RANK}/{SIZE}: {what}: not bit-identical ({diff} differ)")


def expect_error(kind: type, start: str, fn) -> None:
    """fn() must raise `kind` on this rank, its message starting with `start`."""
    try:
        fn()
    except kind as exc:
        if not str(exc).startswith(start):
            raise AssertionError(f"rank {RANK}: message {str(exc)!r} does not start with {start!r}")
        return
    raise AssertionError(f"rank {RANK}: no {kind.__name__} raised ({start})")


class HashPartition(Partition):
    """A user partition: owner = (7 * row + 3) % size, local rows in increasing global order."""

    def __init__(self, n_rows: int, size: int) -> None:
        super().__init__(n_rows, size)
        self.held = [np.flatnonzero(self.owner(np.arange(n_rows)) == r) for r in range(size)]

    def owner(self, rows: np.ndarray) -> np.ndarray:
        return (7 * np.asarray(rows, dtype=np.int64) + 3) % self.size

    def local(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        own = self.owner(rows)
        out = np.empty(rows.size, dtype=np.int64)
        for r in range(self.size):
            m = own == r
            out[m] = np.searchsorted(self.held[r], rows[m])
        return out

    def rows_of(self, rank: int) -> np.ndarray:
        return self.held[rank].astype(np.int64)


def init_rows(dtype):
    full = np.random.default_rng(7).standard_normal((N_ROWS, DIM)).astype(dtype)
    return full, (lambda rows: full[rows])


def sparse_batch(step: int, rank: int, size: int, dtype):
    """Rank `rank`'s batch at `step`: sizes vary, some empty, int32 on odd ranks, duplicates."""
    rng = np.random.default_rng([step, rank, size])
    b = 0 if (step + rank) % 4 == 3 else int(rng.integers(1, 40))
    idx = rng.integers(0, N_ROWS, size=b).astype(np.int32 if rank % 2 else np.int64)
    grads = rng.standard_normal((b, DIM)).astype(dtype)
    return idx, grads


def global_batch(step: int, size: int, dtype):
    parts = [sparse_batch(step, r, size, dtype) for r in range(size)]
    return (np.concatenate([p[0].astype(np.int64) for p in parts]),
            np.concatenate([p[1] for p in parts]))


def check_sparse() -> None:
    configs = [
        (np.float32, False, "block", {}),
        (np.float32, True, "cyclic", {}),
        (np.float64, False, "hash", dict(lr=0.3, eps=1e-6, eps_placement="inside",
                                         weight_decay=0.01, maximize=True)),
        (np.float64, True, "block", dict(lr=0.05, weight_decay=0.1)),
    ]
    for dtype, rowwise, pname, hyper in configs:
        full, init = init_rows(dtype)
        part = HashPartition(N_ROWS, SIZE) if pname == "hash" else pname
        emb = ShardedEmbedding(N_ROWS, DIM, dtype=dtype, rowwise=rowwise, partition=part,
                               init=init, initial_accumulator_value=0.1, **hyper)
        ref_t = full.copy()
        ref_a = np.full((N_ROWS,) if rowwise else (N_ROWS, DIM), 0.1, dtype=dtype)
        what = f"sparse {np.dtype(dtype)} rowwise={rowwise} {pname}"
        for step in range(1, 6):
            idx, grads = sparse_batch(step, RANK, SIZE, dtype)
            same(emb.lookup(idx), ref_t[idx], f"{what} lookup at step {step}")
            emb.step(idx, grads)
            gi, gg = global_batch(step, SIZE, dtype)
            fastadagrad.sparse_adagrad_update(ref_t, ref_a, gi, gg, **hyper)
            same(emb.table, ref_t[emb.rows], f"{what} table shard after step {step}")
            same(emb.accum, ref_a[emb.rows], f"{what} accum shard after step {step}")
        got = emb.gather(root=SIZE - 1)
        if RANK == SIZE - 1:
            same(got[0], ref_t, f"{what} gathered table")
            same(got[1], ref_a, f"{what} gathered accum")
        else:
            assert got is None


def dense_grads(step: int, rank: int, shapes, dtype):
    rng = np.random.default_rng([100 + step, rank])
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


SHAPES = [(7, 5), (13,), (3, 4, 2), (1000,)]


def check_dense() -> None:
    for dtype, hyper in ((np.float32, {}),
                         (np.float64, dict(lr=0.2, lr_decay=0.01, weight_decay=0.05,
                                           eps_placement="inside"))):
        rng = np.random.default_rng(3 + RANK)   # different on each rank: rank 0's wins
        params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        rng0 = np.random.default_rng(3)
        ref_params = [rng0.standard_normal(s).astype(dtype) for s in SHAPES]
        opt = ZeroAdaGrad(params, initial_accumulator_value=0.05, **hyper)
        ref = np.concatenate([p.ravel() for p in ref_params])
        ref_acc = np.full(ref.size, 0.05, dtype=dtype)
        what = f"dense {np.dtype(dtype)}"
        same(opt.arena, ref, f"{what} broadcast params")
        for step in range(1, 6):
            mine = dense_grads(step, RANK, SHAPES, dtype)
            opt.step(mine if step % 2 else np.concatenate([g.ravel() for g in mine]))
            total = np.concatenate([g.ravel() for g in dense_grads(step, 0, SHAPES, dtype)])
            for r in range(1, SIZE):
                total += np.concatenate([g.ravel() for g in dense_grads(step, r, SHAPES, dtype)])
            fastadagrad.adagrad_update(ref, total, ref_acc, step=step, **hyper)
            same(opt.arena, ref, f"{what} params after step {step}")
            same(opt.accum, ref_acc[opt.lo:opt.hi], f"{what} accum slice after step {step}")
        for v, p in zip(opt.params, np.split(ref, np.cumsum([np.prod(s) for s in SHAPES])[:-1])):
            same(v.ravel(), p, f"{what} param views")
        acc = opt.gather_accum()
        if RANK == 0:
            same(acc, ref_acc, f"{what} gathered accum")


def check_rejections() -> None:
    """Bad input on one rank: every rank raises the same error, nothing changes anywhere."""
    last = SIZE - 1
    full, init = init_rows(np.float32)
    emb = ShardedEmbedding(N_ROWS, DIM, init=init)
    t0, a0 = emb.table.copy(), emb.accum.copy()
    idx = np.arange(5, dtype=np.int64)
    grads = np.ones((5, DIM), np.float32)
    bad_idx = np.array([1, 2, N_ROWS], dtype=np.int64) if RANK == last else idx[:3]
    expect_error(ValueError, f"rank {last} of {SIZE}: `indices[2]` = {N_ROWS} is out of range",
                 lambda: emb.step(bad_idx, grads[:3]))
    expect_error(ValueError, f"rank {last} of {SIZE}: `indices[2]`",
                 lambda: emb.lookup(bad_idx))
    bad_g = grads.astype(np.float64) if RANK == 0 else grads
    expect_error(TypeError, f"rank 0 of {SIZE}: `grads` has dtype float64",
                 lambda: emb.step(idx, bad_g))
    bad_shape = grads[:4] if RANK == last else grads
    expect_error(ValueError, f"rank {last} of {SIZE}: `grads` has shape (4, {DIM})",
                 lambda: emb.step(idx, bad_shape))
    same(emb.table, t0, "table after rejected steps")
    same(emb.accum, a0, "accum after rejected steps")
    emb.step(idx, grads)   # the communicator still works
    assert not np.array_equal(emb.table, t0) or emb.rows.size == 0 or emb.rows.min() >= 5

    opt = ZeroAdaGrad([np.ones(100, np.float32)])
    p0, acc0 = opt.arena.copy(), opt.accum.copy()
    g = np.ones(99 if RANK == last else 100, np.float32)
    expect_error(ValueError, f"rank {last} of {SIZE}: `grads` has shape (99,)", lambda: opt.step(g))
    expect_error(TypeError, f"rank 0 of {SIZE}: `grads[0]` has dtype int64",
                 lambda: opt.step([np.ones(100, np.int64) if RANK == 0 else np.ones(100, np.float32)]))
    same(opt.arena, p0, "params after rejected steps")
    same(opt.accum, acc0, "accum after rejected steps")
    assert opt.step_count == 0
    opt.step(np.ones(100, np.float32))
    assert opt.step_count == 1

    if SIZE > 1:
        lr = 0.5 if RANK == last else 0.1
        expect_error(ValueError, "`lr` must be the same on every rank",
                     lambda: ShardedEmbedding(N_ROWS, DIM, lr=lr))
        expect_error(ValueError, "`shapes` must be the same on every rank",
                     lambda: ZeroAdaGrad([np.ones(3 + (RANK == last), np.float32)]))
    expect_error(ValueError, f"rank {last} of {SIZE}: `lr` must be >= 0",
                 lambda: ShardedEmbedding(N_ROWS, DIM, lr=-1.0 if RANK == last else 0.1))
    expect_error(ValueError, f"rank 0 of {SIZE}: `partition` must be one of",
                 lambda: ShardedEmbedding(N_ROWS, DIM, partition="nope" if RANK == 0 else "block"))
    expect_error(ValueError, f"rank 0 of {SIZE}: `path`", lambda: emb.load("/nonexistent/ckpt"))

    class InitError(Exception):
        pass

    def bad_init(rows):   # any exception in a user callback, on one rank only
        if RANK == last:
            raise InitError("no values for these rows")
        return np.zeros((rows.size, DIM), np.float32)
    expect_error(RuntimeError, f"rank {last} of {SIZE}: InitError: no values for these rows",
                 lambda: ShardedEmbedding(N_ROWS, DIM, init=bad_init))


# ------------------------------------------------------------------------- checkpoints
CKPT_STEPS = 3


def ckpt_objects(partition: str):
    full, init = init_rows(np.float32)
    emb = ShardedEmbedding(N_ROWS, DIM, init=init, partition=partition, rowwise=False, lr=0.1)
    opt = ZeroAdaGrad([p.copy() for p in dense_ckpt_params()], lr=0.1, lr_decay=0.01)
    return emb, opt


def dense_ckpt_params():
    return [np.random.default_rng(5).standard_normal(s).astype(np.float32) for s in SHAPES]


def train(emb, opt, steps, size) -> None:
    for step in steps:
        idx, grads = sparse_batch(step, RANK, size, np.float32)
        emb.step(idx, grads)
        opt.step(dense_grads(step, RANK, SHAPES, np.float32))


def reference(schedule) -> tuple:
    """Single-process state after the steps of `schedule`: [(step, world size), ...]."""
    full, _ = init_rows(np.float32)
    t, a = full.copy(), np.zeros((N_ROWS, DIM), np.float32)
    p = np.concatenate([x.ravel() for x in dense_ckpt_params()])
    acc = np.zeros_like(p)
    for step, size in schedule:
        gi, gg = global_batch(step, size, np.float32)
        fastadagrad.sparse_adagrad_update(t, a, gi, gg, lr=0.1)
        total = sum_in_order([np.concatenate([g.ravel() for g in dense_grads(step, r, SHAPES,
                                                                             np.float32)])
                              for r in range(size)])
        fastadagrad.adagrad_update(p, total, acc, lr=0.1, lr_decay=0.01, step=step)
    return t, a, p, acc


def sum_in_order(xs):
    total = xs[0].copy()
    for x in xs[1:]:
        total += x
    return total


def check_state(emb, opt, ref, what: str) -> None:
    t, a, p, acc = ref
    same(emb.table, t[emb.rows], f"{what}: table shard")
    same(emb.accum, a[emb.rows], f"{what}: accum shard")
    same(opt.arena, p, f"{what}: params")
    same(opt.accum, acc[opt.lo:opt.hi], f"{what}: accum slice")


def save(path: str) -> None:
    emb, opt = ckpt_objects("cyclic")
    train(emb, opt, range(1, CKPT_STEPS + 1), SIZE)
    check_state(emb, opt, reference([(s, SIZE) for s in range(1, CKPT_STEPS + 1)]), "before save")
    emb.save(path + "/emb")
    opt.save(path + "/zero")


def load(path: str) -> None:
    import json
    saved = json.load(open(path + "/emb/meta.json"))["world_size"]
    emb, opt = ckpt_objects("block")   # another partition and world size
    emb.load(path + "/emb")
    opt.load(path + "/zero")
    assert opt.step_count == CKPT_STEPS
    schedule = [(s, saved) for s in range(1, CKPT_STEPS + 1)]
    check_state(emb, opt, reference(schedule), f"loaded ({saved} -> {SIZE} ranks)")
    train(emb, opt, range(CKPT_STEPS + 1, CKPT_STEPS + 3), SIZE)
    schedule += [(s, SIZE) for s in range(CKPT_STEPS + 1, CKPT_STEPS + 3)]
    check_state(emb, opt, reference(schedule), "trained after load")
    expect_error(ValueError, "rank 0 of", lambda: ZeroAdaGrad([np.ones(3, np.float32)]).load(
        path + "/zero"))   # another shape: refused on every rank


def main() -> None:
    mode = sys.argv[1]
    if mode == "check":
        check_sparse()
        check_dense()
        check_rejections()
    elif mode == "save":
        save(sys.argv[2])
    elif mode == "load":
        load(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    comm.Barrier()
    if RANK == 0:
        print(f"OK {mode} on {SIZE} ranks ({fastadagrad.get_backend()} backend)", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
