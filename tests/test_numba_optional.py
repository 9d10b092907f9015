"""fastadagrad.numba is optional: `import fastadagrad` never imports numba, and importing
fastadagrad.numba without numba raises an ImportError that names it (runs with or without
numba installed)."""

from __future__ import annotations

import textwrap

from _helpers import run_python


def test_numba_is_optional_and_named_when_missing() -> None:
    out = run_python(textwrap.dedent("""
        import sys
        import fastadagrad
        assert "numba" not in sys.modules, "import fastadagrad imported numba"
        sys.modules["numba"] = None          # as if numba were not installed
        try:
            import fastadagrad.numba
        except ImportError as exc:
            print("ImportError:", exc)
    """))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ImportError: fastadagrad.numba needs numba (pip install numba)")
