"""Shared helpers for the example scripts: the ``--out DIR`` option and headless figure saving.

Not an example itself. The scripts import it as ``_common``, which works when they are run as
``python examples/<name>.py`` (Python puts the script's folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse_args(
    doc: str | None,
    argv: Sequence[str] | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` (``None``: the command line) with ``--out DIR`` plus the script's own options.

    The description is the first line of the script's docstring ``doc``.
    """
    description = (doc or "").strip().splitlines()[0] if doc else None
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
        help=f"folder for the PNG (created if missing; default: {DEFAULT_OUT})",
    )
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args(None if argv is None else list(argv))


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out_dir: Path, name: str) -> Path:
    """Save ``fig`` as ``out_dir/name`` at 120 dpi, close it and return the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path
