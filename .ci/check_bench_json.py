"""CI check of `python -m fastadagrad bench --quick --json FILE`: every registered case is
present for every dtype it runs in (all, or its `only_dtype`), and the equivalence verdict is
true (no timing assertions)."""

import json
import sys

from fastadagrad.bench_cases import BENCH_CASES

with open(sys.argv[1]) as f:
    result = json.load(f)
expected = {c.name for c in BENCH_CASES if c.quick}
missing = expected - set(result["cases"])
assert not missing, f"cases missing from the benchmark: {sorted(missing)}"
for dtype in ("float32", "float64"):
    expected = {c.name for c in BENCH_CASES if c.quick and c.only_dtype in (None, dtype)}
    seen = {r["case"] for r in result["results"] if r["dtype"] == dtype}
    assert expected <= seen, f"{dtype}: rows missing: {sorted(expected - seen)}"
    checked = {e["case"] for e in result["equivalence"] if e["dtype"] == dtype}
    assert expected <= checked, f"{dtype}: equivalence not checked for {sorted(expected - checked)}"
assert result["equivalent"] is True, "equivalence verdict is not true"
available = [e for e in result["equivalence"] if e["available"]]
assert available and all(e["identical"] for e in available)
print(f"CI: bench JSON ok: {len(result['results'])} rows, {len(available)} equivalence checks identical")
