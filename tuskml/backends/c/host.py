"""Build and run C on the host with the system C compiler (``cc``).

Two things are built here, both cached by a hash of their sources and flags so a test session (or a
repeated deploy) compiles each only once:

* :func:`build_kernel_library` - the kernel library in ``kernels/`` as a shared object, for the
  ctypes kernel tests (``tests/sparseengine/c``);
* :func:`build_project` / :func:`run_project` - a project written by
  :func:`tuskml.backends.c.codegen.generate_c_project`, linked with its host main, which reads
  int8 inputs from a file and writes the int8 outputs to another.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

from tuskml.core.errors import TuskmlError

KERNEL_DIR = pathlib.Path(__file__).with_name("kernels")
HOST_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror=implicit-function-declaration")


class CBuildError(TuskmlError):
    """The host C compiler is missing or rejected the sources (the message has its output)."""


class CRunError(TuskmlError):
    """A compiled program failed (non-zero exit, or outputs of the wrong size)."""


def find_host_cc() -> str:
    """The host C compiler: ``$CC`` if set, else ``cc``, ``gcc`` or ``clang`` on PATH."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise CBuildError("no host C compiler found: install gcc or clang, or set CC")


def cache_dir() -> pathlib.Path:
    """Where builds are cached: ``$TUSKML_C_CACHE`` or ``<tmp>/tuskml-c-cache``."""
    path = pathlib.Path(os.environ.get("TUSKML_C_CACHE", pathlib.Path(tempfile.gettempdir()) / "tuskml-c-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def kernel_sources() -> list[pathlib.Path]:
    """The kernel library's ``.c`` files (the libc symbol shim is for firmware only)."""
    return sorted(p for p in KERNEL_DIR.glob("*.c") if p.name != "tk_libc_symbols.c")


def content_hash(paths: list[pathlib.Path], *extra: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:20]


def _compile(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CBuildError(f"compiling {what} failed ({' '.join(cmd[:3])} ...):\n{proc.stderr[-4000:]}")


def _publish(tmp_path: pathlib.Path, final: pathlib.Path) -> pathlib.Path:
    os.replace(tmp_path, final)  # atomic, so parallel builders never see half a file
    return final


def build_kernel_library(*, extra_flags: tuple[str, ...] = ()) -> pathlib.Path:
    """Compile ``kernels/*.c`` into a shared object (cached) and return its path."""
    cc = find_host_cc()
    sources = kernel_sources() + sorted(KERNEL_DIR.glob("*.h"))
    flags = [*HOST_CFLAGS, "-fPIC", "-shared", *extra_flags]
    key = content_hash(sources, cc, *flags)
    out = cache_dir() / f"libtk_kernels_{key}.so"
    if out.exists():
        return out
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    _compile([cc, *flags, "-I", str(KERNEL_DIR), *map(str, kernel_sources()), "-o", str(tmp)], "the kernel library")
    return _publish(tmp, out)


def _kernel_archive(project: pathlib.Path, cc: str, flags: list[str]) -> tuple[pathlib.Path | None, set[str]]:
    """The project's copies of the kernel sources compiled into a cached static archive.

    Kernels are the bulk of a project's C and identical across projects, so they are compiled once
    per content hash; only the model-specific files are compiled per project."""
    kernel_names = {p.name for p in kernel_sources()}
    sources = sorted(p for p in project.glob("*.c") if p.name in kernel_names)
    if not sources or not shutil.which("ar"):
        return None, set()
    headers = sorted(p for p in project.glob("tk_*.h") if (KERNEL_DIR / p.name).exists())
    key = content_hash(sources + headers, cc, *flags)
    archive = cache_dir() / f"libtk_kernels_{key}.a"
    if not archive.exists():
        with tempfile.TemporaryDirectory(prefix="tk_ar_", dir=cache_dir()) as tmp:
            objects = []
            for src in sources:
                obj = pathlib.Path(tmp) / (src.stem + ".o")
                _compile([cc, *flags, "-c", "-I", str(project), str(src), "-o", str(obj)], f"kernel {src.name}")
                objects.append(str(obj))
            tmp_ar = pathlib.Path(tmp) / "lib.a"
            _compile(["ar", "rcs", str(tmp_ar), *objects], "the kernel archive")
            _publish(tmp_ar, archive)
    return archive, {p.name for p in sources}


def build_project(project_dir: str | os.PathLike, *, extra_flags: tuple[str, ...] = ()) -> pathlib.Path:
    """Compile a generated project with its host main (cached by content) and return the executable."""
    project = pathlib.Path(project_dir)
    if not (project / "tk_host_main.c").exists():
        raise CBuildError(f"{project} is not a generated C project (no tk_host_main.c)")
    # the firmware test main and libc shim are for the microcontroller build
    sources = [s for s in sorted(project.glob("*.c")) if s.name not in ("tk_test_main.c", "tk_libc_symbols.c")]
    headers = sorted(project.glob("*.h"))
    cc = find_host_cc()
    flags = [*HOST_CFLAGS, *extra_flags]
    key = content_hash(sources + headers, cc, *flags)
    out = cache_dir() / f"tk_project_{key}"
    if out.exists():
        return out
    archive, in_archive = _kernel_archive(project, cc, flags)
    own = [s for s in sources if s.name not in in_archive]
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cc, *flags, "-I", str(project), *map(str, own)]
    cmd += [str(archive)] if archive else []
    _compile([*cmd, "-o", str(tmp)], f"project {project}")
    return _publish(tmp, out)


def run_project(executable: str | os.PathLike, inputs: np.ndarray, *, output_bytes: int, input_bytes: int) -> np.ndarray:
    """Run a host build on ``inputs`` (int8, ``[S, ...]`` samples of ``input_bytes`` each).

    Returns the int8 outputs, ``[S, output_bytes]``.
    """
    data = np.ascontiguousarray(inputs, dtype=np.int8)
    if data.size % input_bytes:
        raise CRunError(f"inputs of {data.size} bytes are not a whole number of {input_bytes}-byte samples")
    samples = data.size // input_bytes
    with tempfile.TemporaryDirectory(prefix="tk_run_") as tmp:
        in_path = pathlib.Path(tmp) / "in.bin"
        out_path = pathlib.Path(tmp) / "out.bin"
        in_path.write_bytes(data.tobytes())
        proc = subprocess.run([str(executable), str(in_path), str(out_path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CRunError(f"{executable} exited with {proc.returncode}: {proc.stderr[-2000:]}")
        raw = out_path.read_bytes()
    if len(raw) != samples * output_bytes:
        raise CRunError(f"{executable} wrote {len(raw)} bytes, expected {samples} x {output_bytes}")
    return np.frombuffer(raw, dtype=np.int8).reshape(samples, output_bytes).copy()
