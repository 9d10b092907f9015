"""Build the compiled backend: kernels.pyx (dispatch, OpenMP) and _loops.pxi once per ISA level.

Flags (see ../shared/PERF_NOTES.md and README "Building from source"):
- -O3 -fno-math-errno: without it gcc keeps the sqrt loop scalar (8x slower);
- -ffp-contract=off: no FMA contraction, so rounding matches NumPy's separate ufuncs;
- no fast-math flags (they break NaN/inf semantics and equivalence) and no native-CPU -march
  (a wheel must run on any x86-64): AVX2/AVX-512 speed comes from extra builds of the same
  loops, chosen at import by CPU features.
- OpenMP only if a test compile with -fopenmp succeeds (FASTADAGRAD_NO_OPENMP=1 turns it off).
"""

import os
import platform
import shutil
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

GCC_LIKE_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
MSVC_FLAGS = ["/O2", "/fp:precise"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
ISA_FLAGS = {
    "generic": [],
    "avx2": ["-mavx2"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq",
               "-mprefer-vector-width=512"],
}
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def extension(name, **kw):
    return Extension(f"fastadagrad.{name}", [f"src/fastadagrad/{name}.pyx"],
                     include_dirs=[numpy.get_include()], define_macros=MACROS, **kw)


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
    """Adds per-compiler flags, drops ISA builds the compiler cannot make, detects OpenMP."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        base = MSVC_FLAGS if msvc else GCC_LIKE_FLAGS
        keep = []
        for ext in self.extensions:
            isa = ext.name.rsplit("_isa_", 1)[1] if "_isa_" in ext.name else None
            flags = list(base)
            if isa is not None and isa != "generic":
                if msvc or not X86 or not compiles(self.compiler, ISA_FLAGS[isa]):
                    print(f"fastadagrad: skipping the {isa} build (compiler/platform lacks it)")
                    continue
                flags += ISA_FLAGS[isa]
            if ext.name == "fastadagrad.kernels":
                omp = ["/openmp"] if msvc else ["-fopenmp"]
                code = "#include <omp.h>\nint main(void) { return omp_get_max_threads(); }\n"
                if os.environ.get("FASTADAGRAD_NO_OPENMP") != "1" and compiles(
                        self.compiler, omp, code, link=True):
                    flags += omp
                    ext.extra_link_args = list(ext.extra_link_args or []) + ([] if msvc else omp)
                    print("fastadagrad: building with OpenMP")
                else:
                    print("fastadagrad: OpenMP not available, building serial kernels")
            ext.extra_compile_args = flags + list(ext.extra_compile_args or [])
            keep.append(ext)
        self.extensions = keep
        super().build_extensions()


isa_names = ["generic"] + (["avx2", "avx512"] if X86 else [])
extensions = [extension("kernels")] + [extension(f"_isa_{isa}") for isa in isa_names]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
    cmdclass={"build_ext": BuildExt},
)
