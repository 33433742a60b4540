"""Our own CPU kernel for the int8 decode step: `torch.ops.neuroq.int8_linear`.

int8_linear.cpp holds it and says why it exists (PyTorch's int8 matrix-vector kernel is about 2.5x
slower here). It is built on first use with the C++ compiler that compiled decode steps need
anyway, against the installed torch's headers, into a cache directory keyed by a hash of the
source, the torch version and the compiler command, so later processes just load it. The build
takes 15-30 s, writes to a temporary file and renames it, so concurrent processes never load
half a library. Where it cannot be built (no compiler, a CPU without AVX2, Windows), callers
fall back to `torch._weight_int8pack_mm`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

log = logging.getLogger("neuroq.model")

SOURCE = Path(__file__).with_name("int8_linear.cpp")

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet


def cache_dir() -> Path:
    """`$NEUROQ_KERNEL_CACHE`, else `$XDG_CACHE_HOME/neuroq/kernels` (~/.cache/...)."""
    if os.environ.get("NEUROQ_KERNEL_CACHE"):
        return Path(os.environ["NEUROQ_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neuroq" / "kernels"


def int8_linear_available() -> bool:
    """Build (or find) and load the kernel once per process; False, with a logged reason, where
    it cannot run."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _load() -> bool:
    reason = _unsupported()
    if reason:
        log.info("int8_linear kernel not used: %s", reason)
        return False
    try:
        library = _build()
        torch.ops.load_library(str(library))
    except Exception as exc:  # compiler errors, a read-only cache, ...
        log.warning("building the int8_linear kernel failed, using PyTorch's: %s", exc)
        return False

    @torch.library.register_fake("neuroq::int8_linear")
    def _(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x.new_empty(*x.shape[:-1], w.size(-2))

    return True


def _unsupported() -> str | None:
    if platform.system() == "Windows":
        return "Windows"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"a {platform.machine()} CPU"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return "a CPU without AVX2"
    if not shutil.which(_compiler()):
        return f"no C++ compiler ({_compiler()})"
    return None


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _command(source: Path, output: Path) -> list[str]:
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    libraries = cpp_extension.library_paths()[0]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        _compiler(),
        str(source),
        "-shared",
        "-fPIC",
        "-O3",
        "-std=c++20",
        "-mavx2",
        "-mfma",
        "-fopenmp",  # at::parallel_for; resolves to the libgomp torch has loaded
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *includes,
        f"-L{libraries}",
        "-lc10",
        "-ltorch_cpu",
        f"-Wl,-rpath,{libraries}",
        "-o",
        str(output),
    ]


def _build() -> Path:
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(torch.__version__.encode())
    key.update(" ".join(_command(SOURCE, Path("out"))).encode())
    directory = cache_dir()
    library = directory / f"int8_linear-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    log.info("building the int8_linear kernel (once per machine, 15-30 s)")
    started = time.perf_counter()
    fd, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        done = subprocess.run(_command(SOURCE, Path(partial)), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-2000:])
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    log.info("int8_linear kernel built in %.1f s", time.perf_counter() - started)
    return library
