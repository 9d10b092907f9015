"""The fixtures (compiled backend, thread count and ISA restored) and session hooks; the plain
helpers are in tests/_helpers.py.
"""

from __future__ import annotations

from typing import Iterator

import pytest

import fastadagrad
from fastadagrad._backend import IMPORT_ERROR, _kernels
from _helpers import REQUIRE_COMPILED, REQUIRE_PEERS

if REQUIRE_COMPILED and _kernels is None:
    raise RuntimeError(f"FASTADAGRAD_REQUIRE_COMPILED=1 but the extension did not import: {IMPORT_ERROR}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not REQUIRE_PEERS:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    missing = sorted({str(r.longrepr[2]) for r in skipped
                      if isinstance(r.longrepr, tuple) and "not installed" in str(r.longrepr[2])})
    if missing:
        print("\nFASTADAGRAD_REQUIRE_PEERS=1 but tests were skipped for a missing package:\n  "
              + "\n  ".join(missing))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config: pytest.Config) -> str:
    return f"fastadagrad {fastadagrad.__version__}: {fastadagrad.show_config()}"


@pytest.fixture
def compiled() -> Iterator[object]:
    """The compiled kernels module, with the compiled backend selected for the test's duration."""
    if _kernels is None:
        pytest.skip(f"compiled extension not built: {IMPORT_ERROR}")
    with fastadagrad.backend("cython"):
        yield _kernels


@pytest.fixture
def restore_threads() -> Iterator[None]:
    n = fastadagrad.get_num_threads()
    yield
    fastadagrad.set_num_threads(n)


@pytest.fixture
def restore_isa() -> Iterator[None]:
    isa = fastadagrad.get_isa()
    yield
    if _kernels is not None:
        _kernels.set_isa(isa)
