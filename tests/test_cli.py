"""`python -m fastadagrad` and `python -m fastadagrad bench` (smoke tests: output and exit
codes, never timings)."""

from __future__ import annotations

import json

import pytest

from fastadagrad import bench
from fastadagrad._backend import compiled_available
from fastadagrad.bench_cases import BENCH_CASES
from _helpers import run_python

pytestmark = pytest.mark.skipif(not compiled_available(), reason="compiled extension not built")


@pytest.mark.parametrize("selected", ["cython", "numpy"])
def test_info_and_self_check(tmp_path, selected):
    """The self-check and timing compare the compiled backend with the NumPy one even when the
    NumPy backend is the selected one (which the first line reports)."""
    out = run_python("", args=("-m", "fastadagrad"), cwd=str(tmp_path),
                     env={"FASTADAGRAD_BACKEND": selected})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for fragment in ("fastadagrad 0.1.0", f"backend:      {selected}", "ISA path:", "threads:",
                     "bit-identical on random data: yes", "1e6 float32 elements: fastadagrad"):
        assert fragment in text, text


def test_bench_json_plot_and_tables(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    out = run_python("", args=("-m", "fastadagrad", "bench", "--quick", "--sizes", "1e3,2e3",
                               "--dtype", "float32", "--threads", "1", "--json", "r.json",
                               "--plot", "p.png"), cwd=str(tmp_path),
                     env={"FASTADAGRAD_BACKEND": "numpy"})   # bench selects the compiled one
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["equivalent"] is True and result["header"]["threads"] == 1
    names = {r["case"] for r in result["results"]}
    assert {"dense 1e3", "dense 2e3", "optimizer 200x1000", "sparse 1e6x64 batch 4096"} <= names
    dense = next(r for r in result["results"] if r["case"] == "dense 1e3")
    for key in ("numpy", "fast", "probe", "speedup", "gelem_per_s", "gb_per_s", "pct_of_probe"):
        assert key in dense
    assert dense["fast"]["min"] <= dense["fast"]["median"] <= dense["fast"]["max"]
    assert result["header"]["backend"] == "cython"   # the compiled side really was compiled
    assert "identical" in out.stdout and "float32:" in out.stdout and "vs numpy" in out.stdout
    tail = out.stdout.strip().splitlines()
    assert tail[-1] == f"equivalence: all {len(result['equivalence'])} cases bit-identical"
    assert tail[-2].startswith("machine:") and "ISA " in tail[-2] and "1 threads" in tail[-2]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timing" not in out.stdout   # progress goes to stderr


def test_bench_fails_with_exit_1_when_backends_differ(monkeypatch, capsys):
    """A case whose backends disagree: its line says DIFFERENT, no table, exit code 1."""
    from fastadagrad import bench_cases

    class Broken:
        probe = None

        def __init__(self, dtype, rng):
            self.fast = self.numpy = lambda: None

        def torch(self):
            return None

        def identical(self):
            return False

    case = bench_cases.BenchCase("broken", "dense", 10, 5, Broken)
    monkeypatch.setattr(bench, "select_cases", lambda quick, sizes: [case])
    code = bench.main(["--quick", "--dtype", "float32", "--no-torch"])
    text = capsys.readouterr().out
    assert code == 1
    assert "broken" in text and "DIFFERENT" in text and "FAILED" in text
    assert "vs numpy" not in text.split("FAILED")[0].split("DIFFERENT")[1]
    assert text.strip().splitlines()[-1].startswith("equivalence: FAILED, 1 of 1 cases differ (broken")


@pytest.mark.parametrize("ratio, text", [(41.25, "41.2x faster"), (1.0, "1.0x faster"),
                                         (0.2, "5.0x slower"), (0.5, "2.0x slower")])
def test_ratios_below_one_say_slower(ratio, text):
    assert bench.fmt_ratio(ratio) == text


def test_noisy_timings_are_starred():
    quiet = {"median": 1e-3, "min": 0.9e-3, "max": 1.3e-3}
    noisy = {"median": 1e-3, "min": 0.9e-3, "max": 1.4e-3}
    assert bench.fmt_timing(quiet) == "1 ms"
    assert bench.fmt_timing(noisy) == "1 ms *"
    assert not bench.is_noisy(quiet) and bench.is_noisy(noisy)


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fastadagrad import bench\n"
            "sys.exit(bench.main(['--quick', '--plot', 'x.png']))\n")
    out = run_python(code, cwd=str(tmp_path))
    assert out.returncode == 2
    assert "pip install 'fastadagrad[plot]'" in out.stderr
    assert not (tmp_path / "x.png").exists()


def test_every_registered_case_is_in_the_quick_or_full_run():
    quick = {c.name for c in bench.select_cases(True, None)}
    full = {c.name for c in bench.select_cases(False, None)}
    assert quick <= full == {c.name for c in BENCH_CASES}
    assert "dense 6.4e7" in full - quick


def test_bench_busy_smoke_and_competitors_always_stopped(tmp_path, monkeypatch):
    """`bench --busy` reports 1-thread vs default per competitor count (smoke test: tiny
    sizes, no timing claims), and its competitor processes are gone afterwards, also when the
    run is interrupted."""
    from fastadagrad import bench_busy
    pytest.importorskip("fastadagrad.kernels", reason="the compiled extension is not built")
    out = run_python("", args=("-m", "fastadagrad", "bench", "--busy", "--competitors", "0,1",
                               "--sizes", "1e3,5e4", "--no-sparse", "--seconds", "0.05",
                               "--json", "busy.json"), cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = __import__("json").loads((tmp_path / "busy.json").read_text())["rows"]
    assert [(r["competitors"], r["case"]) for r in rows] == [
        (c, f"dense {n:.0e} float32") for c in (0, 1) for n in (1_000, 50_000)]
    assert all(r["median_1"] > 0 and r["median_default"] > 0 for r in rows)
    assert all(0 <= r["slow_1"] <= 1 and 0 <= r["slow_default"] <= 1 for r in rows)
    started: list = []
    with pytest.raises(KeyboardInterrupt):
        with bench_busy.Competitors(2) as comp:
            started = list(comp.procs)
            assert all(p.poll() is None for p in started)
            raise KeyboardInterrupt
    assert len(started) == 2 and all(p.poll() is not None for p in started)


def test_bench_peers_a_column_per_installed_peer(tmp_path):
    """`bench --peers` (tiny sizes): a column per installed peer, a note per missing one."""
    pytest.importorskip("torch", reason="torch is not installed")
    from fastadagrad import bench_peers
    out = run_python("", args=("-m", "fastadagrad", "bench", "--peers", "--quick", "--sizes",
                               "1e3", "--sparse-rows", "1000", "--batch", "64", "--threads", "1"),
                     cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    head = next(line for line in lines if line.startswith("case "))
    expected = ["torch fused", "torch foreach", "torch sparse"]
    missing = bench_peers.missing_peers()
    expected += [c for c in ("numba", "jax/optax") if c not in missing]
    for column in ["fastadagrad", *expected]:
        assert column in head, out.stdout
    for peer, why in missing.items():
        assert f"{peer}: {why} (column skipped)" in lines, out.stdout
        assert peer not in head
    rows = {line.split()[0] + " " + line.split()[1]: line for line in lines
            if line.startswith(("dense ", "sparse "))}
    assert set(rows) == {"dense 1e3", "sparse 1e3x16", "sparse 1e3x64"}, out.stdout
    assert "(" in rows["dense 1e3"] and "1 threads" in out.stdout


def test_bench_peers_without_any_peer(monkeypatch, capsys):
    """With no peer importable, the table has the fastadagrad column only, and each peer
    gets its 'not installed' note."""
    from fastadagrad import bench_peers
    monkeypatch.setattr(bench_peers, "_installed", lambda name: False)
    assert bench_peers.main(["--quick", "--sizes", "1e3", "--sparse-rows", "0",
                             "--threads", "1"]) == 0
    text = capsys.readouterr().out
    head = next(line for line in text.splitlines() if line.startswith("case "))
    assert head.split() == ["case", "fastadagrad"]
    for note in ("torch: torch not installed", "numba: numba not installed",
                 "jax/optax: jax not installed"):
        assert f"{note} (column skipped)" in text
    assert "dense 1e3" in text


def test_interleaved_samples_each_follow_their_own_warm_up():
    """Before each timed sample its function runs untimed for `settle_time` (after a pause), so
    a sample never starts right after another function's calls (whose spinning threads would
    take its core)."""
    from fastadagrad import bench_timing

    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    t = bench_timing.interleaved(fns, min_time=0.0, samples=3, settle_time=0.002)
    assert {k: len(v) for k, v in t.items()} == {"a": 3, "b": 3, "c": 3}
    runs = []   # lengths of the runs of consecutive calls of one function after calibration
    timed = calls[6:]   # calibrate: one warm-up call and one timed call per function
    for k in timed:
        if runs and runs[-1][0] == k:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    assert [k for k, _ in runs] == list("abc") * 3
    assert all(n >= 2 for _, n in runs)   # >= 1 untimed call, then the timed one
    calls.clear()
    bench_timing.interleaved(fns, min_time=0.0, samples=3, settle_time=0.0)
    assert len(calls) == 6 + 2 * 9        # one settle call and one timed call per sample
