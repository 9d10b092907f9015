"""L1-regularised logistic regression with proximal AdaGrad on scikit-learn's bundled breast
cancer data: exact zeros in the weights, and how many as L1 grows.

Model: p(y=1 | x) = sigmoid(w·x + b), 30 standardised features (569 tumours, 75/25 split,
random_state=0, statistics from the training rows). Loss per mini-batch of 32 rows: mean
log-loss; its gradient g = Xᵀ(p - y) / 32 goes to fastadagrad.proximal_adagrad_update (TF's
ApplyProximalAdagrad: accum += g²; a = lr/sqrt(accum); w = sign(w - a g)·max(|w - a g| - a·l1, 0)
/ (1 + a·l2)), lr = 0.5, accumulator 0.1, 30 epochs in a fixed shuffled order; the bias by plain
AdaGrad (no L1 on it). For each l1 in --l1 it prints the weights that are exactly 0, the test
accuracy and log-loss; saves l1_logistic.png (non-zero weights and test accuracy against l1).
The data ship with scikit-learn: no download.

Run::

    python examples/l1_logistic_proximal.py [--epochs 30] [--lr 0.5] [--l1 0 1e-3 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np

import fastadagrad
from _common import parse_args, positive_int, pyplot, save_figure

SEED = 0
BATCH = 32
L1_VALUES = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=30, help="epochs (default: 30)")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate (default: 0.5)")
    parser.add_argument("--l1", type=float, nargs="+", default=list(L1_VALUES),
                        help=f"L1 strengths to train with (default: {' '.join(map(str, L1_VALUES))})")


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=SEED)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    return (X_tr - mean) / std, y_tr.astype(float), (X_te - mean) / std, y_te.astype(float)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def train(X: np.ndarray, y: np.ndarray, l1: float, epochs: int, lr: float
          ) -> tuple[np.ndarray, float]:
    """(w, b) after `epochs` of mini-batch proximal AdaGrad from w = 0."""
    rng = np.random.default_rng(SEED)
    w, acc = np.zeros(X.shape[1]), np.full(X.shape[1], 0.1)
    b, b_acc = np.zeros(1), np.full(1, 0.1)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), BATCH):
            rows = order[start:start + BATCH]
            err = sigmoid(X[rows] @ w + b[0]) - y[rows]
            fastadagrad.proximal_adagrad_update(w, X[rows].T @ err / len(rows), acc, lr=lr, l1=l1)
            fastadagrad.adagrad_update(b, np.array([err.mean()]), b_acc, lr=lr, eps=0.0)
    return w, float(b[0])


def plot(l1s: Sequence[float], nonzero: Sequence[int], accuracy: Sequence[float], d: int) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(l1s))
    ax.bar(x, nonzero, color="tab:blue", alpha=0.7, label="non-zero weights")
    ax.set(xticks=x, xticklabels=[f"{v:g}" for v in l1s], xlabel="l1", ylim=(0, d + 1),
           ylabel=f"non-zero weights (of {d})",
           title="Breast cancer, L1 logistic regression, proximal AdaGrad")
    ax2 = ax.twinx()
    ax2.plot(x, accuracy, "o-", color="tab:red", label="test accuracy")
    ax2.set(ylabel="test accuracy", ylim=(0.8, 1.0))
    fig.legend(loc="lower left", bbox_to_anchor=(0.12, 0.12))
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train for every l1; print and return {"l1", "nonzero", "accuracy", "log_loss",
    "weights": lists per l1, "png": Path}."""
    args = parse_args(__doc__, argv, _options)
    X_tr, y_tr, X_te, y_te = load_data()
    d = X_tr.shape[1]
    print(f"breast cancer: {len(y_tr)} train / {len(y_te)} test rows, {d} standardised features; "
          f"proximal AdaGrad lr = {args.lr:g}, batch {BATCH}, {args.epochs} epochs")
    print(f"  {'l1':>8}  {'zero weights':>12}  {'test accuracy':>13}  {'test log-loss':>13}")
    out: dict[str, Any] = {"l1": list(args.l1), "nonzero": [], "accuracy": [], "log_loss": [],
                           "weights": []}
    for l1 in args.l1:
        w, b = train(X_tr, y_tr, l1, args.epochs, args.lr)
        p = sigmoid(X_te @ w + b)
        acc = float(np.mean((p > 0.5) == (y_te > 0.5)))
        nz = int(np.count_nonzero(w))
        out["nonzero"].append(nz)
        out["accuracy"].append(acc)
        out["log_loss"].append(log_loss(p, y_te))
        out["weights"].append(w)
        print(f"  {l1:>8g}  {d - nz:>8d}/{d}  {acc:>13.3f}  {out['log_loss'][-1]:>13.4f}")
    out["png"] = save_figure(plot(args.l1, out["nonzero"], out["accuracy"], d), args.out,
                             "l1_logistic.png")
    print(f"saved {out['png']}")
    return out


if __name__ == "__main__":
    main()
