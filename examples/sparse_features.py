"""Sparse AdaGrad vs SGD: multi-label logistic regression on long-tailed sparse features.

Synthetic data shaped like hashed categorical features in click prediction: a vocabulary of
V = 10,000 features with Zipf(1) frequencies (feature f, counted from 0, is drawn with
probability ∝ 1/(f+1)); each example has 10-30 of them (repeats allowed) plus a bias feature
that every example has, and D = 8 binary labels. Every feature, frequent or rare, has a true
weight vector θ_f ~ N(0, I_D), so a rare feature is as informative, per occurrence, as a
frequent one. With S the features of an example, k = |S| and a bias b ~ N(-0.5, 0.5²) per
label::

    z_true = 3 Σ_{f∈S} θ_f / sqrt(k) + b,      y_j ~ Bernoulli(sigmoid(z_true_j)),  j = 1..D

The model is a weight table W (V+1, D) float32, one row per feature (the last row is the bias),
used as an embedding bag: z = Σ_{f∈S} W[f], loss = mean over examples and labels of
log(1 + e^z) - y z. For a batch of B examples the gradient of row f is the sum, over the
occurrences of f in the batch, of (sigmoid(z) - y) / (B D) of the example it occurs in. The
script passes one gradient row per occurrence, duplicates included (the bias row alone comes
B times), straight to ``fastadagrad.sparse_adagrad_update``, which sums duplicates before
squaring. On each touched row r, with g its summed gradient::

    AdaGrad, element-wise, accum (V+1, D):  A[r] += g²           W[r] -= lr g / (sqrt(A[r]) + eps)
    AdaGrad, row-wise, accum (V+1,):        a[r] += mean_j g_j²  W[r] -= lr g / (sqrt(a[r]) + eps)
    SGD, in NumPy:                          np.add.at(W, indices, -lr * grads)  (adds duplicates)

Batches of 512 examples in a fixed order (the examples are i.i.d.), 5 epochs, W = 0 at the
start, held-out set a fifth the size of the training set.

Learning rates. SGD's is tuned at run time: the best final training loss over 5, 10, 20 (20
is already unstable; 10 wins, and also has the best held-out loss of the three). AdaGrad uses
lr = 0.1, eps = 1e-10 for both variants, set by hand and not tuned at run time. Other values,
measured with the defaults: 0.03 is slower (held-out 0.460), 0.3 gets a lower training loss
(0.275) but a worse held-out one (0.439), and both still beat SGD on every line of the
summary; at 1 the held-out loss (0.560) is worse than SGD's (0.499). Even at 0.1 AdaGrad's
training loss ends below the true model's (0.330 vs 0.353) while its held-out loss levels off
at 0.420: after the first epoch it partly fits the noise in the rare rows.

Why AdaGrad wins. SGD's step on a row is proportional to how often the feature occurs: the
bias and the head features get large gradients in every batch and cap SGD's lr, so the rare
features barely move. AdaGrad divides each row (or coordinate) by the root of its own
gradient history, so a rare feature's few updates are as large as a frequent one's first. The
gap is widest on rare-heavy examples: the rare features are the least frequent ones that make
up the last 25% of training occurrences (for the defaults: seen fewer than 119 times, 9,126 of
the 10,000), and an example is rare-heavy when at least 40% of its features (bias excluded) are
rare. The row-wise variant keeps one accumulator per row instead of D (8x less state) and ends
within 0.003 of the element-wise one here, slightly below it: the 8 labels of a row see
gradients of similar size.

Prints the training log-loss after each epoch for the three methods with the wall time of each
epoch (the whole loop: forward pass, gradient, update; the time in the update alone in
brackets), then the training and held-out log-loss, overall and on rare-heavy examples, next to
the true model's; saves ``sparse_features.png`` (training and held-out loss per epoch, all
examples and rare-heavy ones). Deterministic given ``--seed``, except the timings. Takes a few
seconds; the size options make it smaller.

Run::

    python examples/sparse_features.py [--epochs 5] [--seed 0] [--features 10000]
        [--examples 50000] [--batch 512] [--lr 0.1] [--sgd-lr LR] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

import fastadagrad
from _common import parse_args, positive_int, pyplot, save_figure

LABELS = 8                      # D: binary labels per example, the table's row width
MIN_ACTIVE, MAX_ACTIVE = 10, 30  # active features per example (bias excluded), uniform
ZIPF_EXPONENT = 1.0
LOGIT_SCALE = 3.0
EPS = 1e-10
SGD_GRID = (5.0, 10.0, 20.0)
RARE_OCCURRENCE_SHARE = 0.25    # rare features: the least frequent, 25% of training occurrences
RARE_HEAVY_FRACTION = 0.4       # rare-heavy example: >= 40% of its features are rare
HELD_OUT_RATIO = 5              # held-out examples = training examples / 5

METHODS = ("adagrad", "rowwise", "sgd")
NAMES = {"adagrad": "AdaGrad", "rowwise": "AdaGrad row-wise", "sgd": "SGD"}
COLORS = {"adagrad": "tab:red", "rowwise": "tab:orange", "sgd": "tab:blue"}


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=5, help="epochs (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--features", type=positive_int, default=10_000,
                        help="vocabulary size V (default: 10000)")
    parser.add_argument("--examples", type=positive_int, default=50_000,
                        help="training examples; held-out: a fifth as many (default: 50000)")
    parser.add_argument("--batch", type=positive_int, default=512,
                        help="examples per mini-batch (default: 512)")
    parser.add_argument("--lr", type=positive_float, default=0.1,
                        help="AdaGrad learning rate, both variants (default: 0.1)")
    parser.add_argument("--sgd-lr", type=positive_float, default=None,
                        help="SGD learning rate (default: tuned over "
                             f"{', '.join(f'{lr:g}' for lr in SGD_GRID)})")


class Data(NamedTuple):
    """Examples in CSR form: the features of example i are idx[off[i]:off[i+1]], the bias
    row (index V) first."""
    idx: np.ndarray      # (nnz,) int64 feature ids, repeats allowed
    off: np.ndarray      # (n + 1,) int64 offsets
    y: np.ndarray        # (n, D) float32 labels in {0, 1}
    z_true: np.ndarray   # (n, D) float64 true logits

    @property
    def n(self) -> int:
        return len(self.off) - 1


def make_data(rng: np.random.Generator, n: int, cdf: np.ndarray, theta: np.ndarray,
              bias: np.ndarray) -> Data:
    """n examples: Zipf-drawn features, the bias row, labels from the true logits."""
    v = len(cdf)
    k = rng.integers(MIN_ACTIVE, MAX_ACTIVE + 1, size=n)
    feats = np.minimum(np.searchsorted(cdf, rng.random(int(k.sum())), side="right"), v - 1)
    starts = np.concatenate([[0], np.cumsum(k)[:-1]])
    z_true = LOGIT_SCALE * np.add.reduceat(theta[feats], starts, axis=0) / np.sqrt(k)[:, None]
    z_true += bias
    y = (rng.random(z_true.shape) < sigmoid(z_true)).astype(np.float32)
    off = np.concatenate([[0], np.cumsum(k + 1)]).astype(np.int64)
    idx = np.empty(off[-1], dtype=np.int64)
    is_bias = np.zeros(off[-1], dtype=bool)
    is_bias[off[:-1]] = True
    idx[is_bias] = v
    idx[~is_bias] = feats
    return Data(idx, off, y, z_true)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def example_losses(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example log-loss, the mean over the labels of log(1 + e^z) - y z (float64)."""
    z = z.astype(np.float64)
    return np.mean(np.logaddexp(0.0, z) - y * z, axis=1)


def logits(table: np.ndarray, data: Data) -> np.ndarray:
    """z = the sum of the example's rows (an embedding bag), in the table's dtype."""
    return np.add.reduceat(np.take(table, data.idx, axis=0), data.off[:-1], axis=0)


def rare_features(data: Data, v: int) -> tuple[np.ndarray, int]:
    """(rare mask over the V features, count threshold): rare = seen fewer than `threshold`
    times in `data`, the smallest threshold whose rarer features make up at most
    RARE_OCCURRENCE_SHARE of the occurrences (bias excluded)."""
    counts = np.bincount(data.idx, minlength=v + 1)[:v]
    ordered = np.sort(counts)
    levels = np.unique(ordered)                                    # ascending
    cumulative = np.concatenate([[0], np.cumsum(ordered)])
    below = cumulative[np.searchsorted(ordered, levels)]           # occurrences rarer than c
    threshold = int(levels[below <= RARE_OCCURRENCE_SHARE * counts.sum()][-1])
    return counts < threshold, threshold


def rare_heavy(data: Data, rare: np.ndarray) -> np.ndarray:
    """Examples with at least RARE_HEAVY_FRACTION of their features rare (bias excluded)."""
    is_rare = np.append(rare, False)[data.idx].astype(np.float64)   # the bias row is not rare
    share = np.add.reduceat(is_rare, data.off[:-1]) / (np.diff(data.off) - 1)
    return share >= RARE_HEAVY_FRACTION


def batch_gradient(table: np.ndarray, data: Data, lo: int,
                   hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, grads) of the batch loss of examples lo..hi-1, in the table's dtype: one row
    per feature occurrence, duplicates not merged (their sum is the gradient of that row)."""
    a, b = data.off[lo], data.off[hi]
    indices = data.idx[a:b]
    z = np.add.reduceat(np.take(table, indices, axis=0), data.off[lo:hi] - a, axis=0)
    scale = table.dtype.type(1.0 / (LABELS * (hi - lo)))
    residual = (sigmoid(z) - data.y[lo:hi]) * scale                # dloss/dz, (B, D)
    return indices, np.repeat(residual, np.diff(data.off[lo:hi + 1]), axis=0)


class Run(NamedTuple):
    snapshots: list[np.ndarray]   # the table at the start and after each epoch
    epoch_time: np.ndarray        # (epochs,) seconds, the whole epoch loop
    update_time: np.ndarray       # (epochs,) seconds in the update calls


def train(method: str, lr: float, data: Data, v: int, epochs: int, batch: int) -> Run:
    """Train W = 0 on `data` with `method` ("adagrad", "rowwise" or "sgd")."""
    table = np.zeros((v + 1, LABELS), dtype=np.float32)
    accum = (np.zeros((v + 1, LABELS), dtype=np.float32) if method == "adagrad"
             else np.zeros(v + 1, dtype=np.float32))
    snapshots = [table.copy()]
    epoch_time = np.empty(epochs)
    update_time = np.zeros(epochs)
    neg_lr = np.float32(-lr)
    for epoch in range(epochs):
        start = time.perf_counter()
        for lo in range(0, data.n, batch):
            indices, grads = batch_gradient(table, data, lo, min(lo + batch, data.n))
            t0 = time.perf_counter()
            if method == "sgd":
                np.add.at(table, indices, neg_lr * grads)
            else:
                fastadagrad.sparse_adagrad_update(table, accum, indices, grads, lr=lr, eps=EPS)
            update_time[epoch] += time.perf_counter() - t0
        epoch_time[epoch] = time.perf_counter() - start
        snapshots.append(table.copy())
    return Run(snapshots, epoch_time, update_time)


def losses(table: np.ndarray, data: Data, heavy: np.ndarray) -> tuple[float, float]:
    """(log-loss over all examples, over the rare-heavy ones; NaN if there are none)."""
    per_example = example_losses(logits(table, data), data.y)
    return float(per_example.mean()), (float(per_example[heavy].mean()) if heavy.any()
                                       else float("nan"))


def curves(run: Run, data: Data, heavy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loss, rare-heavy loss) at each snapshot, as two (epochs + 1,) arrays."""
    both = np.array([losses(table, data, heavy) for table in run.snapshots])
    return both[:, 0], both[:, 1]


def plot(train_curves: dict[str, tuple[np.ndarray, np.ndarray]],
         held_out_curves: dict[str, tuple[np.ndarray, np.ndarray]], lrs: dict[str, float],
         true_loss: dict[str, float], info: str) -> Any:
    """Two panels, all examples and rare-heavy ones: log-loss per epoch, training (solid) and
    held-out (dashed), with the true model's held-out loss (dotted)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 6), sharey=True)
    panels = ((0, "held_out", "all examples"),
              (1, "held_out_rare", "rare-heavy examples (>= 40% rare features)"))
    for ax, (col, true_key, title) in zip(axes, panels):
        for m in METHODS:
            train, held = train_curves[m][col], held_out_curves[m][col]
            epochs = np.arange(len(train))
            ax.plot(epochs, train, marker="o", markersize=4, color=COLORS[m],
                    label=f"{NAMES[m]} (lr {lrs[m]:g}), training")
            ax.plot(epochs, held, marker="s", markersize=3.5, linestyle="--", color=COLORS[m],
                    label=f"{NAMES[m]}, held-out: {held[-1]:.4f}")
        ax.axhline(true_loss[true_key], color="0.3", linestyle=":", linewidth=1.3,
                   label=f"true model, held-out: {true_loss[true_key]:.4f}")
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    axes[0].set_ylabel("log-loss (mean over the 8 labels)")
    axes[1].tick_params(labelleft=True)
    fig.suptitle(info, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Generate the data, train the three methods, print the table, save sparse_features.png.

    Returns, for the methods "adagrad", "rowwise" and "sgd": {"train_loss", "train_rare_loss",
    "held_out_curve", "held_out_rare_curve": {method: (epochs + 1,) array, [0] at the start},
    "epoch_time", "update_time": {method: (epochs,) seconds}, "held_out_loss",
    "held_out_rare_loss": {method: float, after the last epoch}, "true_loss": {"train",
    "train_rare", "held_out", "held_out_rare": float}, "lr": {method: float}, "sgd_grid": {lr:
    final training loss} (empty with --sgd-lr), "rare_threshold", "rare_features",
    "rare_heavy_share": {"train", "held_out"}, "png"}.
    """
    args = parse_args(__doc__, argv, _options)
    v, epochs = args.features, args.epochs
    rng = np.random.default_rng(args.seed)
    weights = 1.0 / np.arange(1, v + 1) ** ZIPF_EXPONENT
    cdf = np.cumsum(weights) / weights.sum()
    theta = rng.normal(size=(v, LABELS))
    bias = rng.normal(-0.5, 0.5, size=LABELS)
    train_data = make_data(rng, args.examples, cdf, theta, bias)
    test_data = make_data(rng, max(1, args.examples // HELD_OUT_RATIO), cdf, theta, bias)
    rare, threshold = rare_features(train_data, v)
    heavy_train, heavy_test = rare_heavy(train_data, rare), rare_heavy(test_data, rare)

    def true_losses(data: Data, heavy: np.ndarray) -> tuple[float, float]:
        per_example = example_losses(data.z_true, data.y)
        return float(per_example.mean()), (float(per_example[heavy].mean()) if heavy.any()
                                           else float("nan"))

    true_loss = dict(zip(("train", "train_rare"), true_losses(train_data, heavy_train)))
    true_loss.update(zip(("held_out", "held_out_rare"), true_losses(test_data, heavy_test)))
    counts = np.bincount(train_data.idx, minlength=v + 1)[:v]
    print(f"Multi-label logistic regression ({LABELS} labels) on synthetic sparse data, seed "
          f"{args.seed}: {train_data.n:,} training and {test_data.n:,} held-out examples;\n"
          f"{v:,} features with Zipf({ZIPF_EXPONENT:g}) frequencies, {MIN_ACTIVE}-{MAX_ACTIVE} "
          f"per example plus a bias row; table W ({v + 1}, {LABELS}) float32; batches of "
          f"{args.batch} examples,\none gradient row per occurrence, duplicates included "
          f"({train_data.idx.size / train_data.n:.1f} rows per example).")
    print(f"Rare features: seen < {threshold} times in training ({int(rare.sum()):,} of "
          f"{v:,}, {counts[rare].sum() / counts.sum():.0%} of occurrences); rare-heavy "
          f"examples (>= {RARE_HEAVY_FRACTION:.0%} of their features rare):\n"
          f"{heavy_train.mean():.1%} of training, {heavy_test.mean():.1%} of held-out.")

    def run(method: str, lr: float) -> Run:
        return train(method, lr, train_data, v, epochs, args.batch)

    grid: dict[float, float] = {}
    if args.sgd_lr is None:
        sgd_runs = {lr: run("sgd", lr) for lr in SGD_GRID}
        grid = {lr: losses(r.snapshots[-1], train_data, heavy_train)[0]
                for lr, r in sgd_runs.items()}
        sgd_lr = min(grid, key=lambda lr: np.inf if np.isnan(grid[lr]) else grid[lr])
        print("SGD lr tuned on the final training loss: "
              + ", ".join(f"lr {lr:g} -> {loss:.4f}" for lr, loss in grid.items())
              + f"; best lr = {sgd_lr:g}.")
        sgd_run = sgd_runs[sgd_lr]
    else:
        sgd_lr = args.sgd_lr
        sgd_run = run("sgd", sgd_lr)
    lrs = {"adagrad": args.lr, "rowwise": args.lr, "sgd": sgd_lr}
    print(f"AdaGrad lr = {args.lr:g}, eps = {EPS:g} (not tuned); element-wise accum "
          f"({v + 1}, {LABELS}), row-wise accum ({v + 1},).")
    runs = {"adagrad": run("adagrad", args.lr), "rowwise": run("rowwise", args.lr),
            "sgd": sgd_run}
    train_curves = {m: curves(runs[m], train_data, heavy_train) for m in METHODS}
    held_out_curves = {m: curves(runs[m], test_data, heavy_test) for m in METHODS}

    print("\nTraining log-loss after each epoch, and the wall time of the epoch (forward pass, "
          "gradient, update),\nwith the time in the update alone in brackets. SGD's update is "
          "NumPy's np.add.at.")
    print("epoch" + "".join(f"     {NAMES[m] + f' (lr {lrs[m]:g})':<25}" for m in METHODS).rstrip())
    for e in range(epochs + 1):
        cells = []
        for m in METHODS:
            r = runs[m]
            timing = (f"  {r.epoch_time[e - 1]:6.3f}s [{r.update_time[e - 1]:.3f}s]" if e
                      else " " * 19)
            cells.append(f"{train_curves[m][0][e]:11.4f}{timing}")
        print((f"{e:5d}" + "".join(cells)).rstrip())

    print("\nAfter training               " + "".join(f"{NAMES[m]:>18}" for m in METHODS)
          + f"{'true model':>14}")
    rows = (("training", lambda m: train_curves[m][0][-1], true_loss["train"]),
            ("training, rare-heavy", lambda m: train_curves[m][1][-1], true_loss["train_rare"]),
            ("held-out", lambda m: held_out_curves[m][0][-1], true_loss["held_out"]),
            ("held-out, rare-heavy", lambda m: held_out_curves[m][1][-1],
             true_loss["held_out_rare"]),
            ("mean epoch time (s)", lambda m: runs[m].epoch_time.mean(), None),
            ("mean update time (s)", lambda m: runs[m].update_time.mean(), None))
    for label, value, ref in rows:
        ref_cell = "" if ref is None else f"{ref:14.4f}"
        print(f"  {label:<27}" + "".join(f"{value(m):18.4f}" for m in METHODS) + ref_cell)

    info = (f"Sparse {LABELS}-label logistic regression: {v:,} Zipf-distributed features, "
            f"{train_data.n:,} training examples, batches of {args.batch}, "
            f"fastadagrad.sparse_adagrad_update vs SGD")
    png = save_figure(plot(train_curves, held_out_curves, lrs, true_loss, info), args.out,
                      "sparse_features.png")
    print(f"saved {png}")
    return {
        "train_loss": {m: train_curves[m][0] for m in METHODS},
        "train_rare_loss": {m: train_curves[m][1] for m in METHODS},
        "held_out_curve": {m: held_out_curves[m][0] for m in METHODS},
        "held_out_rare_curve": {m: held_out_curves[m][1] for m in METHODS},
        "epoch_time": {m: runs[m].epoch_time for m in METHODS},
        "update_time": {m: runs[m].update_time for m in METHODS},
        "held_out_loss": {m: float(held_out_curves[m][0][-1]) for m in METHODS},
        "held_out_rare_loss": {m: float(held_out_curves[m][1][-1]) for m in METHODS},
        "true_loss": true_loss,
        "lr": lrs,
        "sgd_grid": grid,
        "rare_threshold": threshold,
        "rare_features": int(rare.sum()),
        "rare_heavy_share": {"train": float(heavy_train.mean()),
                             "held_out": float(heavy_test.mean())},
        "png": png,
    }


if __name__ == "__main__":
    main()
