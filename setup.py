"""cmrvsr_fast: package metadata and two optional extensions, neither using the torch ABI (they build without torch):

- cmrvsr_fast._C, the CUDA kernels (csrc/*.cu): built when nvcc is found (or CMRVSR_BUILD_CUDA=1), skipped with
  CMRVSR_SKIP_CUDA_BUILD=1; it links the CUDA runtime statically. Architectures come from CMRVSR_CUDA_ARCHS
  ("80;86;87;89;90" by default; sm_87 is Jetson Orin).
- cmrvsr_fast._cpu, the CPU kernels (csrc/cpu: the Winograd transforms of the float32 CPU schedule): built with
  the C++ compiler and OpenMP, skipped with CMRVSR_SKIP_CPU_BUILD=1.

An install never fails for an extension's sake unless its CMRVSR_BUILD_CUDA=1 / CMRVSR_BUILD_CPU=1 asked for it:
the package works without either (slower on a CPU without _cpu).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "80;86;87;89;90"


def read_version() -> str:
    """The version from cmrvsr_fast/_version.py, without importing the package (torch may not be installed yet)."""
    text = (ROOT / "cmrvsr_fast" / "_version.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _cuda_home() -> Path | None:
    """A CUDA toolkit with nvcc, headers and libraries: CUDA_HOME, CUDA_PATH, the nvcc on PATH, /usr/local/cuda.
    (An nvcc on PATH may be a wrapper script outside the toolkit, hence the fallback.)"""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    candidates += [str(Path(nvcc).resolve().parent.parent) if nvcc else None, "/usr/local/cuda"]
    for candidate in filter(None, candidates):
        home = Path(candidate)
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return home
    return None


def _cuda_archs() -> list[str]:
    """CMRVSR_CUDA_ARCHS in any of the usual spellings ("8.0 8.6", "80,86", "sm_80;sm_90") -> ["80", "86"]."""
    raw = os.environ.get("CMRVSR_CUDA_ARCHS", DEFAULT_ARCHS)
    archs = [re.sub(r"[^0-9]", "", item) for item in re.split(r"[;,\s]+", raw) if item.strip()]
    if not archs or any(len(a) < 2 for a in archs):
        raise SystemExit(f"CMRVSR_CUDA_ARCHS={raw!r}: expected a list such as '80;86;87;89;90'")
    return archs


# The flag that makes each extension's build failure fail the install.
REQUIRED_BY = {"cmrvsr_fast._C": "CMRVSR_BUILD_CUDA", "cmrvsr_fast._cpu": "CMRVSR_BUILD_CPU"}


class BuildExtensions(build_ext):
    """Builds each extension on its own: one whose build fails (nvcc, the compiler or the linker) is skipped with a
    message unless its flag in REQUIRED_BY asked for it, and the others are still built."""

    def build_extensions(self) -> None:
        failed = []
        for ext in self.extensions:
            try:
                if ext.name == "cmrvsr_fast._C":
                    self._compile_cuda_sources(ext)
                self.build_extension(ext)
            except Exception as error:
                if _flag(REQUIRED_BY[ext.name]):
                    raise
                kind = "CUDA" if ext.name == "cmrvsr_fast._C" else "CPU"
                print(f"cmrvsr_fast: skipping the optional {kind} extension ({error}); the package works without it")
                failed.append(ext)
        # What was not built is forgotten, so that no later step (the copy of an editable install) looks for it.
        self.extensions = [ext for ext in self.extensions if ext not in failed]
        self.distribution.ext_modules = list(self.extensions)

    def _compile_cuda_sources(self, ext: Extension) -> None:
        cuda_sources = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        nvcc = str(CUDA_HOME / "bin" / "nvcc")
        build_dir = Path(self.build_temp) / "cuda"
        build_dir.mkdir(parents=True, exist_ok=True)
        archs = _cuda_archs()
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")  # PTX for newer GPUs
        for source in cuda_sources:
            obj = build_dir / (Path(source).stem + ".o")
            command = [
                nvcc,
                "-c",
                source,
                "-o",
                str(obj),
                "-O3",
                "-std=c++17",
                "-Xcompiler",
                "-fPIC",
                "-I",
                str(ROOT / "csrc"),
                *gencode,
            ]
            print(" ".join(command))
            subprocess.run(command, check=True)
            ext.extra_objects.append(str(obj))


def _pybind11_include() -> str:
    """pybind11's headers: from pybind11 (a build-system requirement), else from torch, which ships them — an
    offline machine with torch but no pybind11 (the lent GPU image) can still build the extension."""
    try:
        import pybind11

        return pybind11.get_include()
    except ImportError:
        import torch

        return str(Path(torch.__file__).parent / "include")


def _extensions() -> list[Extension]:
    return [*_cpu_extension(), *_cuda_extension()]


def _cpu_extension() -> list[Extension]:
    if _flag("CMRVSR_SKIP_CPU_BUILD"):
        return []
    cpu = Path("csrc") / "cpu"
    try:
        pybind11_include = _pybind11_include()
    except ImportError as error:  # neither pybind11 nor torch where the build runs (no build isolation)
        if _flag("CMRVSR_BUILD_CPU"):
            raise SystemExit(f"CMRVSR_BUILD_CPU=1 but pybind11's headers were not found ({error})") from error
        print(f"cmrvsr_fast: skipping the optional CPU extension (pybind11's headers: {error})")
        return []
    return [
        Extension(
            "cmrvsr_fast._cpu",
            sources=[str(cpu / "winograd.cpp"), str(cpu / "bindings.cpp")],
            include_dirs=[pybind11_include, str(cpu)],
            # OpenMP: the same runtime PyTorch loads (libgomp), so torch.set_num_threads sets its threads too.
            extra_compile_args=["-std=c++17", "-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            language="c++",
        )
    ]


def _cuda_extension() -> list[Extension]:
    if _flag("CMRVSR_SKIP_CUDA_BUILD"):
        return []
    if CUDA_HOME is None:
        if _flag("CMRVSR_BUILD_CUDA"):
            raise SystemExit("CMRVSR_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        return []
    csrc = Path("csrc")
    return [
        Extension(
            "cmrvsr_fast._C",
            sources=[*sorted(str(p) for p in csrc.glob("*.cu")), str(csrc / "bindings.cpp")],
            include_dirs=[_pybind11_include(), str(CUDA_HOME / "include"), str(csrc)],
            library_dirs=[str(CUDA_HOME / "lib64"), str(CUDA_HOME / "lib")],
            libraries=["cudart_static", "dl", "rt", "pthread"],
            define_macros=[("CMRVSR_CUDA_ARCHS", '"' + ",".join(_cuda_archs()) + '"')],
            extra_compile_args=["-std=c++17", "-O2"],
            language="c++",
        )
    ]


CUDA_HOME = _cuda_home()

setup(
    name="cmrvsr_fast",
    version=read_version(),
    description="Fast, phase-aware video super-resolution for cardiac MRI cines (MICCAI 2020 network)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[*find_packages(include=["cmrvsr_fast", "cmrvsr_fast.*"]), "cmrvsr_fast.kernels", "cmrvsr_fast.export"],
    package_dir={"cmrvsr_fast.kernels": "kernels", "cmrvsr_fast.export": "export"},
    package_data={"cmrvsr_fast": ["weights/*.safetensors", "weights/*.json"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtensions},
    # torch is deliberately unpinned: any CPU or CUDA build >= 2.4 works (the Makefile installs the CPU build).
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "scipy>=1.10",
        "safetensors>=0.4",
        "nibabel>=5",
        "pydicom>=3.0",
        "pillow>=10",
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-benchmark>=4",
            "ruff>=0.5",
            "pybind11>=2.12",  # with setuptools and wheel: builds without isolation (tests/test_build.py)
            "wheel",
            "triton>=3.0; platform_system == 'Linux'",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "opencv-python-headless>=4.8",  # only to check cvcompat and the degradation against OpenCV in tests
            "scikit-image>=0.22",  # only as the independent SSIM/PSNR in tests
            "matplotlib>=3.7",  # the Fig. 4a plot of benchmarks/fps_vs_params.py
            "pynetdicom>=2.1",  # the DICOM node's tests
            "tomli>=2; python_version < '3.11'",
        ],
        "bench": ["matplotlib>=3.7"],
        "tensorrt": ["tensorrt>=10"],
        "node": ["pynetdicom>=2.1", "tomli>=2; python_version < '3.11'"],  # cmrvsr-fast serve
        "dicom": ["pylibjpeg>=2", "pylibjpeg-libjpeg>=2", "pylibjpeg-openjpeg>=2", "pylibjpeg-rle>=2"],
    },
    entry_points={"console_scripts": ["cmrvsr-fast = cmrvsr_fast.cli:main"]},
    zip_safe=False,
)
