"""Builds dinat_m2f and its native extensions: `dinat_m2f._C`, the ops users call, and
`dinat_m2f._C_testing`, the test-only ops (the CUDA kernels on the emulated device, CPU code),
which only the tests load (tests/emulated_device.py).

The C++ CPU kernels are always built. The CUDA kernels are built when a CUDA toolkit is found
(`CUDA_HOME`/`CUDA_PATH`, else the toolkit the `nvcc` on PATH belongs to, following wrapper
scripts), or required with `FORCE_CUDA=1`; `FORCE_CUDA=0` skips them. Architectures come from
`TORCH_CUDA_ARCH_LIST` (default "8.0;9.0"). Install in place with
`pip install -e . --no-build-isolation`.
"""

import glob
import os
import re
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _toolkit_of_nvcc(nvcc: str) -> str | None:
    """Toolkit folder of an nvcc binary, looking through shell wrapper scripts."""
    real = os.path.realpath(nvcc)
    with open(real, "rb") as f:
        head = f.read(65536)
    if head.startswith(b"#!"):
        for match in re.finditer(rb"(/[^\s'\"]+)/bin/nvcc\b", head):
            home = match.group(1).decode()
            target = os.path.join(home, "bin", "nvcc")
            if os.path.isfile(target) and os.path.realpath(target) != real:
                return _toolkit_of_nvcc(target)
        return None
    return os.path.dirname(os.path.dirname(real))


def find_cuda_home() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None and os.path.isfile("/usr/local/cuda/bin/nvcc"):
        nvcc = "/usr/local/cuda/bin/nvcc"
    return _toolkit_of_nvcc(nvcc) if nvcc else None


def want_cuda(cuda_home: str | None) -> bool:
    force = os.environ.get("FORCE_CUDA")
    if force == "0":
        return False
    if force == "1" and cuda_home is None:
        raise RuntimeError(
            "FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the toolkit folder "
            "(the one holding bin/nvcc)"
        )
    return cuda_home is not None


def extensions():
    cuda_home = find_cuda_home()
    with_cuda = want_cuda(cuda_home)
    if with_cuda:
        # torch.utils.cpp_extension reads CUDA_HOME when imported.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    testing_sources = sorted(glob.glob("native/testing/*.cpp"))
    sources = sorted(glob.glob("native/*.cpp") + glob.glob("native/*/*.cpp"))
    sources = [s for s in sources if s not in testing_sources]
    # -fopenmp: at::parallel_for is inline and needs it. -std=c++20: the emulated device
    # waits on std::atomic (C++20); torch 2.11 (the GPU machine's) builds C++17 otherwise
    cxx = ["-O3", "-fopenmp", "-std=c++20"]
    kwargs = dict(
        include_dirs=[os.path.join(ROOT, "native")],
        extra_link_args=["-fopenmp"],
    )
    testing = CppExtension(
        "dinat_m2f._C_testing", testing_sources, extra_compile_args={"cxx": cxx}, **kwargs
    )
    if not with_cuda:
        user = CppExtension("dinat_m2f._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
        return [user, testing]
    sources += sorted(glob.glob("native/*/*.cu"))
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-DWITH_CUDA", "--threads", "2"]
    user = CUDAExtension(
        "dinat_m2f._C",
        sources,
        extra_compile_args={"cxx": cxx + ["-DWITH_CUDA"], "nvcc": nvcc},
        **kwargs,
    )
    return [user, testing]


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtensionKeepingObjects(BuildExtension):
        """pip's editable builds compile in a fresh temporary folder; keeping the objects in
        build/ lets ninja recompile only the sources that changed."""

        def finalize_options(self):
            super().finalize_options()
            self.build_temp = os.path.join(ROOT, "build", "temp")

    return BuildExtensionKeepingObjects.with_options(use_ninja=True)


setup(
    name="dinat_m2f",
    version="0.1.0",
    description=(
        "Dilated Neighborhood Attention Transformer (DiNAT) with Mask2Former for detectron2"
    ),
    packages=find_packages(include=["dinat_m2f", "dinat_m2f.*"]),
    python_requires=">=3.10",
    ext_modules=extensions(),
    cmdclass={"build_ext": build_ext_class()},
)
