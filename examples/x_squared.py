"""AdaGrad by hand on f(x) = x², from x = 4 with lr = 1 and eps = 1e-8 inside the square root.

Each step, with g = f'(x) = 2x::

    G   <- G + g²                  (accumulator, starts at 0)
    eta  = lr / sqrt(G + eps)      (effective learning rate)
    x   <- x - eta * g             (the update is -eta * g)

so x = 4, 3, 2.4, 1.9673... and G = 64, 100, 123.04, ...; the script prints that table (the x
column is x *after* the step) and saves ``x_squared.png``: the iterates on the parabola and the
shrinking effective learning rate.

Run::

    python examples/x_squared.py [--steps 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Sequence

import numpy as np

import fastadagrad
from _common import parse_args, positive_int, pyplot, save_figure

X0 = 4.0
LR = 1.0
EPS = 1e-8  # inside the sqrt: denom = sqrt(G + eps), the textbook / Keras 3 / optax placement

COLUMNS = ("step", "x", "gradient", "G", "eff. lr", "update")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive_int, default=10,
                        help="number of AdaGrad steps (default: 10)")


def run(steps: int) -> list[dict[str, float]]:
    """The table rows: per step the gradient at the old x, G, eta, the update and the new x."""
    x = np.array([X0])
    G = np.zeros(1)
    rows = []
    for step in range(1, steps + 1):
        x_before = float(x[0])
        grad = 2.0 * x  # f'(x) = 2x
        fastadagrad.adagrad_update(x, grad, G, lr=LR, eps=EPS, eps_placement="inside")
        g_acc = float(G[0])
        rows.append({
            "step": step,
            "x": float(x[0]),
            "gradient": float(grad[0]),
            "G": g_acc,
            "eff_lr": LR / math.sqrt(g_acc + EPS),
            "update": float(x[0]) - x_before,
        })
    return rows


def format_table(rows: list[dict[str, float]]) -> str:
    """x, gradient, eta and the update to 4 significant digits, G to 2 decimals.

    Four significant digits make the first rows read x = 3.000, 2.400, 1.967. The exact third
    value is 2.4 - 4.8/sqrt(123.04) = 1.96728...; textbooks that show "1.968" rounded the update
    to 0.432 before subtracting it. G = 64.00, 100.00, 123.04 is exact to those decimals.
    """
    lines = [f"{COLUMNS[0]:>4}  {COLUMNS[1]:>8}  {COLUMNS[2]:>9}  {COLUMNS[3]:>8}  "
             f"{COLUMNS[4]:>8}  {COLUMNS[5]:>9}"]
    for r in rows:
        lines.append(f"{r['step']:>4d}  {r['x']:>#8.4g}  {r['gradient']:>#9.4g}  {r['G']:>8.2f}  "
                     f"{r['eff_lr']:>#8.4g}  {r['update']:>+#9.4g}")
    return "\n".join(lines)


def plot(rows: list[dict[str, float]]) -> Any:
    """Left: f(x) = x² with the iterates; right: x and the effective learning rate per step."""
    plt = pyplot()
    xs = np.array([X0] + [r["x"] for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    grid = np.linspace(-0.5, X0 + 0.5, 200)
    ax1.plot(grid, grid**2, color="0.6", label="f(x) = x²")
    ax1.plot(xs, xs**2, "o-", color="tab:blue", label="AdaGrad iterates")
    ax1.plot([0.0], [0.0], "r*", markersize=14, label="minimum x = 0")
    ax1.set(xlabel="x", ylabel="f(x)", title=f"AdaGrad on x², x0 = {X0:g}, lr = {LR:g}")
    ax1.legend()
    for step, x in enumerate(xs[:4]):
        ax1.annotate(str(step), (x, x**2), textcoords="offset points", xytext=(-12, 6))
    steps = np.arange(len(xs))
    ax2.plot(steps, xs, "o-", color="tab:blue", label="x after the step")
    ax2.set(xlabel="step", title="x shrinks, and so does the step size")
    ax2.set_ylabel("x", color="tab:blue")
    ax3 = ax2.twinx()  # eta is ~0.1, x is ~1: one axis each
    ax3.plot(steps[1:], [r["eff_lr"] for r in rows], "s--", color="tab:orange",
             label="effective lr = lr / sqrt(G + eps)")
    ax3.set_ylabel("effective learning rate", color="tab:orange")
    handles = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    ax2.legend(handles=handles)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Print the step table, save x_squared.png; return {"rows": [...], "png": Path}."""
    args = parse_args(__doc__, argv, _options)
    rows = run(args.steps)
    print(f"AdaGrad on f(x) = x^2: x0 = {X0:g}, lr = {LR:g}, eps = {EPS:g} inside the sqrt")
    print(format_table(rows))
    png = save_figure(plot(rows), args.out, "x_squared.png")
    print(f"saved {png}")
    return {"rows": rows, "png": png}


if __name__ == "__main__":
    main()
