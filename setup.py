"""Builds the flash_mla package and its C++/CUDA extension flash_mla._C.

PyTorch must be importable at build time, so build without isolation:

    MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -v .

CUTLASS/CuTe headers come from $CUTLASS_DIR (a checkout with include/cute) or from
third_party/cutlass, which scripts/fetch_cutlass.sh fills when it is missing.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent


def links_shared_libstdcxx(cxx: str) -> bool:
    """Whether `cxx` links the shared libstdc++ (it can name the library's path)."""
    try:
        found = subprocess.run(
            [cxx, "-print-file-name=libstdc++.so"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return False
    return os.path.isabs(found)


def choose_cxx() -> None:
    """Builds with a C++ compiler that links the shared libstdc++, as PyTorch does.

    Seen on a GPU machine: the first g++ on PATH (/opt/gcc/bin/g++) had no libstdc++.so and
    linked the static archive into the extension; formatting an error message then crashed in
    that second copy of libstdc++ (std::ostream against the other copy's locale). CXX, when
    set and fit, is kept; one that would link libstdc++ statically is replaced, with a note.
    """
    chosen = os.environ.get("CXX")
    if chosen and links_shared_libstdcxx(chosen):
        return
    candidates = [shutil.which("g++"), shutil.which("c++"), "/usr/bin/g++", "/usr/bin/c++"]
    for cxx in candidates:
        if cxx and os.path.exists(cxx) and links_shared_libstdcxx(cxx):
            if chosen:
                print(f"note: CXX={chosen} links libstdc++ statically; building with {cxx}")
            os.environ["CXX"] = cxx
            os.environ["LDSHARED"] = f"{cxx} -shared"
            return
    print("warning: no C++ compiler found that links the shared libstdc++; the extension may crash")


choose_cxx()


def cutlass_include_dir() -> str:
    env_dir = os.environ.get("CUTLASS_DIR")
    cutlass = Path(env_dir) if env_dir else ROOT / "third_party" / "cutlass"
    if not env_dir and not (cutlass / "include" / "cute").is_dir():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_cutlass.sh")], check=True)
    if not (cutlass / "include" / "cute").is_dir():
        raise RuntimeError(f"CUTLASS headers not found: {cutlass}/include/cute (set CUTLASS_DIR)")
    return str(cutlass / "include")


def extension_sources() -> list[str]:
    """The whole C++ core (as CMake's flashmla_core) plus the PyTorch binding, sorted."""
    patterns = ("src/**/*.cpp", "src/**/*.cu", "bindings/torch/*.cpp")
    return [
        str(path.relative_to(ROOT)) for pattern in patterns for path in sorted(ROOT.glob(pattern))
    ]


# Mirrors the CMake build of flashmla_core (Release), so both builds compile the same code.
COMMON_FLAGS = ["-O3", "-std=c++20", "-DNDEBUG", "-DNDEBUG_KERNEL_CHECKS"]
NVCC_FLAGS = COMMON_FLAGS + [
    "-gencode=arch=compute_90a,code=sm_90a",
    "--expt-relaxed-constexpr",
    "-lineinfo",
    "-Xptxas=--warn-on-spills",
    # PyTorch adds -D__CUDA_NO_HALF_OPERATORS__ and friends; the kernels use those operators.
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
]

os.chdir(ROOT)  # sources are relative to the project root
setup(
    packages=["flash_mla"],
    package_dir={"": "python"},
    ext_modules=[
        CUDAExtension(
            name="flash_mla._C",
            sources=extension_sources(),
            include_dirs=[str(ROOT / "include"), str(ROOT / "src"), cutlass_include_dir()],
            extra_compile_args={"cxx": COMMON_FLAGS, "nvcc": NVCC_FLAGS},
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    # Keeps setuptools' objects (reused by ninja on the next install) apart from CMake's build/.
    options={"build": {"build_base": "build-py"}},
)
