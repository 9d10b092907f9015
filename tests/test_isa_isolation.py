"""The built extension cannot execute an instruction the CPU lacks: only the per-ISA loop units
(functions named fa_avx2_* / fa_avx512_*) may contain AVX instructions. Module init, the argument
gate, the dispatcher and the generic loops must be baseline x86-64 code (no VEX/EVEX encoding,
no ymm/zmm/mask registers), and the AVX2 loops must not use AVX-512. Read from `objdump -d` of
the installed extension, as NumPy's build keeps its dispatch sources apart."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

import pytest

from fastadagrad._backend import IMPORT_ERROR, _kernels

REQUIRED = os.environ.get("FASTADAGRAD_REQUIRE_COMPILED") == "1"
X86 = platform.machine().lower() in ("x86_64", "amd64")

pytestmark = [
    pytest.mark.skipif(_kernels is None, reason=f"compiled extension not built: {IMPORT_ERROR}"),
    pytest.mark.skipif(not X86, reason="ISA isolation concerns x86-64 builds only"),
]

FUNCTION = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
AVX_REG = re.compile(r"%[yz]mm\d+|%k[0-7]\b")
AVX512_REG = re.compile(r"%zmm\d+|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")


def disassembly() -> dict[str, list[str]]:
    """{function name: [instruction lines]} of every compiled extension in the package."""
    objdump = shutil.which("objdump")
    if objdump is None:
        if REQUIRED:
            pytest.fail("objdump (binutils) is required to check the ISA isolation in CI")
        pytest.skip("objdump (binutils) not installed")
    package = os.path.dirname(_kernels.__file__)
    binaries = sorted(os.path.join(package, f) for f in os.listdir(package)
                      if f.endswith((".so", ".pyd")))
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", *binaries],
                         capture_output=True, text=True, check=True).stdout
    functions: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        match = FUNCTION.match(line.strip())
        if match:
            current = functions.setdefault(match.group(1), [])
        elif current is not None and "\t" in line:
            current.append(line.split("\t", 1)[1].strip())
    return functions


def uses_avx(instruction: str) -> bool:
    mnemonic = instruction.split()[0] if instruction.split() else ""
    return mnemonic.startswith("v") or bool(AVX_REG.search(instruction))


def isa_of(function: str) -> str:
    for isa in ("avx512", "avx2"):
        if function.startswith(f"fa_{isa}_"):
            return isa
    return "baseline"


def test_only_the_isa_loop_units_use_avx():
    functions = disassembly()
    assert any(name.startswith("PyInit_") for name in functions), "no module init found"
    offenders = {name: [i for i in body if uses_avx(i)][:3]
                 for name, body in functions.items() if isa_of(name) == "baseline"}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, f"baseline code uses AVX instructions: {offenders}"


def test_the_isa_units_hold_their_loops():
    """The check above is not vacuous: the AVX units exist and really use their ISA."""
    functions = disassembly()
    compiled = _kernels.isa_compiled()
    for isa in ("avx2", "avx512"):
        if isa not in compiled:
            continue
        bodies = [body for name, body in functions.items() if isa_of(name) == isa]
        assert bodies, f"no fa_{isa}_* functions although {isa} is compiled in"
        assert any(uses_avx(i) for body in bodies for i in body), f"{isa} loops use no AVX"
    if "avx512" in compiled:
        assert any(AVX512_REG.search(i) for name, body in functions.items()
                   if isa_of(name) == "avx512" for i in body), "avx512 loops use no zmm/k registers"


def test_avx2_loops_use_no_avx512():
    functions = disassembly()
    offenders = {name: [i for i in body if AVX512_REG.search(i)][:3]
                 for name, body in functions.items() if isa_of(name) == "avx2"}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, f"AVX2 loops use AVX-512 registers: {offenders}"
