"""SGD, momentum and AdaGrad in the ill-conditioned bowl f(x, y) = x²/20 + y².

The gradient is (x/10, 2y): the y direction is 20 times steeper than x. From (-7, 2), 45 steps:

    SGD       p <- p - lr * grad                                lr = 0.95
    Momentum  v <- 0.9 v - lr * grad;  p <- p + v               lr = 0.1
    AdaGrad   G <- G + grad²;  p <- p - lr * grad / (sqrt(G) + eps)    lr = 0.9, eps = 1e-7

The SGD and momentum settings, the starting point and eps are those of the classic comparison
in Saito's "Deep Learning from Scratch" (ch. 6), which uses AdaGrad lr = 1.5 and 30 steps;
here AdaGrad uses lr = 0.9 and all three take 45 steps. SGD zig-zags across the ravine (its y
factor per step is 1 - 2*0.95 = -0.9), momentum overshoots along it, and AdaGrad's per-coordinate
scaling kills the y motion at once and then creeps along x. The script prints the final
distance to the minimum (0, 0) for each and saves ``ravine.png`` (contours, the three paths).

Run::

    python examples/ravine.py [--steps 45] [--out DIR]
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

import numpy as np

import fastadagrad
from _common import parse_args, positive_int, pyplot, save_figure

START = (-7.0, 2.0)
SGD_LR = 0.95
MOMENTUM_LR = 0.1
MOMENTUM = 0.9
ADAGRAD_LR = 0.9
ADAGRAD_EPS = 1e-7  # outside the sqrt, as in the book (and PyTorch)

Step = Callable[[np.ndarray, np.ndarray], None]  # (p, grad) -> None, updates p in place


def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """f(x, y) = x²/20 + y²."""
    return x**2 / 20.0 + y**2


def grad_f(p: np.ndarray) -> np.ndarray:
    """(df/dx, df/dy) = (x/10, 2y)."""
    return np.array([p[0] / 10.0, 2.0 * p[1]])


def sgd() -> Step:
    def step(p: np.ndarray, g: np.ndarray) -> None:
        p -= SGD_LR * g
    return step


def momentum() -> Step:
    v = np.zeros(2)

    def step(p: np.ndarray, g: np.ndarray) -> None:
        v[:] = MOMENTUM * v - MOMENTUM_LR * g
        p += v
    return step


def adagrad() -> Step:
    G = np.zeros(2)

    def step(p: np.ndarray, g: np.ndarray) -> None:
        fastadagrad.adagrad_update(p, g, G, lr=ADAGRAD_LR, eps=ADAGRAD_EPS)
    return step


OPTIMIZERS: dict[str, tuple[Callable[[], Step], str]] = {
    "SGD": (sgd, f"SGD (lr={SGD_LR})"),
    "Momentum": (momentum, f"Momentum (lr={MOMENTUM_LR}, momentum={MOMENTUM})"),
    "AdaGrad": (adagrad, f"AdaGrad (lr={ADAGRAD_LR})"),
}


def trajectory(make_step: Callable[[], Step], steps: int) -> np.ndarray:
    """The (steps + 1, 2) array of points, starting at START."""
    p = np.array(START)
    step = make_step()
    path = [p.copy()]
    for _ in range(steps):
        step(p, grad_f(p))
        path.append(p.copy())
    return np.array(path)


def plot(paths: dict[str, np.ndarray], steps: int) -> Any:
    """One contour plot of f with the three trajectories and the minimum."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    xx, yy = np.meshgrid(np.linspace(-8, 4, 400), np.linspace(-2.5, 2.5, 300))
    ax.contour(xx, yy, f(xx, yy), levels=np.geomspace(0.02, 12, 14), colors="0.75", linewidths=0.8)
    styles = {"SGD": ("tab:blue", "o"), "Momentum": ("tab:green", "s"), "AdaGrad": ("tab:red", "^")}
    for name, path in paths.items():
        color, marker = styles[name]
        dist = np.hypot(*path[-1])
        ax.plot(path[:, 0], path[:, 1], marker=marker, markersize=3.5, linewidth=1.2, color=color,
                label=f"{OPTIMIZERS[name][1]}: final distance {dist:.3f}")
    ax.plot(*START, "ko", markersize=7, zorder=5, label=f"start {START}")
    ax.plot(0, 0, "*", color="gold", markeredgecolor="k", markersize=18, zorder=5,
            label="minimum (0, 0)")
    ax.set(xlabel="x", ylabel="y", xlim=(-8, 4), ylim=(-2.5, 2.5),
           title=f"f(x, y) = x²/20 + y², {steps} steps from {START}")
    ax.legend(loc="lower right", fontsize=8.5)
    fig.tight_layout()
    return fig


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive_int, default=45,
                        help="steps per optimizer (default: 45)")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the three optimizers, print each final distance, save ravine.png.

    Returns {"paths": {name: (steps+1, 2) array}, "final_distance": {name: float}, "png": Path}.
    """
    args = parse_args(__doc__, argv, _options)
    paths = {name: trajectory(make, args.steps) for name, (make, _) in OPTIMIZERS.items()}
    distances = {name: float(np.hypot(*path[-1])) for name, path in paths.items()}
    print(f"f(x, y) = x^2/20 + y^2 from {START}, {args.steps} steps; "
          "distance to the minimum (0, 0):")
    for name, path in paths.items():
        x, y = path[-1]
        print(f"  {OPTIMIZERS[name][1]:<34} ends at ({x:+.4f}, {y:+.4f}), "
              f"distance {distances[name]:.4f}")
    png = save_figure(plot(paths, args.steps), args.out, "ravine.png")
    print(f"saved {png}")
    return {"paths": paths, "final_distance": distances, "png": png}


if __name__ == "__main__":
    main()
