"""Build the compiled backend: one extension, fastadagrad.kernels, from
- kernels.pyx (Cython: argument gate, dispatch, threads) and _csrc/dispatch.c, compiled with the
  baseline flags only: this is all the code that runs at import;
- _csrc/isa_{generic,avx2,avx512}.c: the same loops (_csrc/loops.h) compiled once per ISA level
  with that level's -m flags. They hold loops and a const table of pointers, no other code, and
  are used only after the CPU check in dispatch.c (NumPy's "dispatch sources" model).

Flags (see README "Building from source"):
- -O3 -fno-math-errno: without it gcc keeps the sqrt loop scalar (8x slower);
- -ffp-contract=off: no FMA contraction, so rounding matches NumPy's separate ufuncs;
- no fast-math flags (they break NaN/inf semantics and equivalence) and no native-CPU -march
  (a wheel must run on any x86-64).
- threads: our own pthreads pool (_threadpool.h), no OpenMP.

FASTADAGRAD_PUREPYTHON=1 installs the NumPy backend only (no compiler needed). Without it, a
failed compile (no C compiler) also falls back to the NumPy backend, with a warning that says how
to get the compiled one.
"""

import concurrent.futures
import glob
import os
import platform
import shutil
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = os.path.join("src", "fastadagrad")
CSRC = os.path.join(SRC, "_csrc")
GCC_LIKE_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
MSVC_FLAGS = ["/O2", "/fp:precise"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mf16c"],   # F16C: float16 conversions (every AVX2 CPU has it)
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mf16c",
               "-mprefer-vector-width=512"],
}
PURE_PYTHON = os.environ.get("FASTADAGRAD_PUREPYTHON", "") not in ("", "0")
NO_COMPILER_HELP = (
    "fastadagrad: the C extension could not be built ({error}). Installing the pure-NumPy "
    "backend only: same results, several times slower. To get the compiled kernels, install a "
    "C compiler and the Python headers (Debian/Ubuntu: apt-get install gcc python3-dev; "
    "Fedora: dnf install gcc python3-devel; macOS: xcode-select --install; Windows: the MSVC "
    "Build Tools) and reinstall with `pip install --force-reinstall --no-cache-dir fastadagrad` "
    "(or `pip install .` in a checkout). Set FASTADAGRAD_PUREPYTHON=1 to skip the build on purpose."
)


def compiles(compiler, flags, code="int main(void) { return 0; }\n", link=False):
    """Test-compile `code` with `flags`; True if it builds."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        if link:
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Compiles the ISA units with their own flags, and falls back to the pure-NumPy install
    when there is no working compiler."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers: keep the pure-Python install
            if os.environ.get("FASTADAGRAD_REQUIRE_COMPILED") == "1":
                raise
            self.warn(NO_COMPILER_HELP.format(error=f"{type(exc).__name__}: {exc}"))
            print(NO_COMPILER_HELP.format(error=f"{type(exc).__name__}: {exc}"), file=sys.stderr)

    def build_extension(self, ext):
        """The ISA units compile on a thread pool while the extension's own sources compile in
        this thread (each compile is a compiler process: ~85 s of CPU one after the other, ~45 s
        on two cores); the extension links once every unit is built."""
        msvc = self.compiler.compiler_type == "msvc"
        base = MSVC_FLAGS if msvc else GCC_LIKE_FLAGS
        levels = self._isa_levels(ext, msvc)
        flags = list(base) + ([] if msvc else ["-pthread"])   # the worker pool (_threadpool.h)
        if not msvc:
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-pthread"]
        ext.extra_compile_args = flags + list(ext.extra_compile_args or [])
        if msvc and not self.compiler.initialized:   # before two threads would both do it
            self.compiler.initialize()
        with concurrent.futures.ThreadPoolExecutor(self._jobs()) as pool:
            units = [pool.submit(self._compile_isa_unit, isa, base + isa_flags)
                     for isa, isa_flags in levels.items()]
            link = self.compiler.link_shared_object

            def link_when_built(objects, *args, **kwargs):
                # result() re-raises a unit's compile error here, before anything is linked
                return link(objects + [o for unit in units for o in unit.result()],
                            *args, **kwargs)

            self.compiler.link_shared_object = link_when_built
            try:
                super().build_extension(ext)
            finally:
                del self.compiler.link_shared_object   # back to the class's method
            for unit in units:   # (also when the extension was up to date and not linked)
                unit.result()

    def _jobs(self):
        """Compiler processes at once: `build_ext -j N` if given, else the CPUs this process
        may run on."""
        if self.parallel not in (None, False, True):   # (0 == False: the default too)
            return max(1, int(self.parallel))
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    def _isa_levels(self, ext, msvc):
        """{level: its -m flags} for every ISA unit this compiler can build (the generic one
        always); defines FA_HAVE_<LEVEL> for dispatch.c for each."""
        levels = {"generic": []}
        for isa, isa_flags in ISA_FLAGS.items():
            if msvc or not X86 or not compiles(self.compiler, isa_flags):
                print(f"fastadagrad: skipping the {isa} loops (compiler/platform lacks them)")
                continue
            levels[isa] = isa_flags
            ext.define_macros.append((f"FA_HAVE_{isa.upper()}", "1"))
        return levels

    def _compile_isa_unit(self, isa, flags):
        """The objects of _csrc/isa_<isa>.c compiled with `flags`."""
        return self.compiler.compile(
            [os.path.join(CSRC, f"isa_{isa}.c")], output_dir=self.build_temp,
            include_dirs=[CSRC], extra_postargs=flags,
            depends=sorted(glob.glob(os.path.join(CSRC, "*.h"))))


def extensions():
    if PURE_PYTHON:
        print("fastadagrad: FASTADAGRAD_PUREPYTHON is set: installing the NumPy backend only")
        return []
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        print(NO_COMPILER_HELP.format(error=exc), file=sys.stderr)
        return []
    ext = Extension("fastadagrad.kernels",
                    [os.path.join(SRC, "kernels.pyx"), os.path.join(CSRC, "dispatch.c")],
                    include_dirs=[numpy.get_include(), "src", CSRC],
                    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                    # the loop headers too: the ISA objects they build are linked into it
                    depends=[os.path.join(SRC, name) for name in (
                        "_sparse.pxi", "_duplicates.pxi", "_family.pxi", "_clipnorm.pxi",
                        "_clip.pxi",
                        "_mixed.pxi", "_mixed_multi.pxi", "_c_api.pxi", "fastadagrad.h")]
                    + sorted(glob.glob(os.path.join(CSRC, "*.h"))))
    # The Cython directives are defined once, in kernels.pyx's `# cython:` header line.
    return cythonize([ext])


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
