"""Developer sessions. `nox -l` lists them; `nox` runs the default set (what CI runs).

Every session runs in ONE shared virtualenv (.nox/_shared, override with TUSKML_NOX_VENV) that holds
torch, so torch (several GB) is installed once, not once per session. The venv is rebuilt only when
pyproject.toml or the pins below change.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys

import nox

ROOT = pathlib.Path(__file__).resolve().parent
VENV = pathlib.Path(os.environ.get("TUSKML_NOX_VENV", ROOT / ".nox" / "_shared"))
# torchvision (needed by timm) pins torch; these two are the CPU-runnable pair this project tests on.
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
EXTRAS = "all,dev"

# Each family / backend leg is tested on its own, so a broken part shows up as its own failed session.
FAMILIES: dict[str, list[str]] = {
    "core": ["tests/core", "tests/plugin_conformance"],
    "mammoth2": ["tests/mammoth2"],
    "sparseengine": ["tests/sparseengine", "--ignore=tests/sparseengine/c",
                     "--ignore=tests/sparseengine/test_tinygrad.py", "--ignore=tests/sparseengine/test_deploy.py"],
    "c": ["tests/sparseengine/c"],
    "tinygrad": ["tests/sparseengine/test_tinygrad.py"],
    "emulator": ["tests/mcu_targets", "tests/sparseengine/test_deploy.py"],
    "tinyformer": ["tests/tinyformer"],
    "demo": ["tests/demo"],
}

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests", "examples"]
nox.options.reuse_existing_virtualenvs = True


def _bin(name: str) -> str:
    return str(VENV / "bin" / name)


def shared_env(session: nox.Session) -> dict[str, str]:
    """Create or reuse the shared venv; return the environment that puts it first on PATH."""
    stamp_text = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(TORCH_PINS).encode()).hexdigest()
    stamp = VENV / ".tuskml-stamp"
    if not (stamp.is_file() and stamp.read_text() == stamp_text and pathlib.Path(_bin("python")).exists()):
        if VENV.exists():
            shutil.rmtree(VENV)
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
        session.run(_bin("python"), "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
        session.run(_bin("python"), "-m", "pip", "install", "-q", *TORCH_PINS, external=True)
        session.run(_bin("python"), "-m", "pip", "install", "-q", "-e", f".[{EXTRAS}]", external=True)
        stamp.write_text(stamp_text)
    env = {"PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(VENV)}
    env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    return env


@nox.session
@nox.parametrize("family", list(FAMILIES))
def tests(session: nox.Session, family: str) -> None:
    """pytest for one leg of the matrix: core, mammoth2, sparseengine, c, tinygrad, emulator, tinyformer, demo."""
    env = shared_env(session)
    args = FAMILIES[family]
    missing = [a for a in args if not a.startswith("-") and not (ROOT / a).exists()]
    if missing:
        session.error(f"test paths of {family!r} are missing: {missing}")
    session.run(_bin("python"), "-m", "pytest", *args, *session.posargs, env=env, external=True)


@nox.session
def conformance(session: nox.Session) -> None:
    """tuskml.testing conformance checks over every registered component."""
    env = shared_env(session)
    session.run(_bin("python"), "-m", "pytest", "tests/plugin_conformance", *session.posargs, env=env, external=True)


@nox.session
def examples(session: nox.Session) -> None:
    """Install the example third-party plugin and run the tests that exercise it."""
    env = shared_env(session)
    session.run(_bin("python"), "-m", "pytest", "tests/core/test_example_plugin.py", *session.posargs, env=env,
                external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and examples."""
    env = shared_env(session)
    session.run(_bin("ruff"), "check", "tuskml", "tests", "benchmarks", "examples", "noxfile.py", env=env,
                external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on tuskml/core (the typed contract every plugin builds on)."""
    env = shared_env(session)
    session.run(_bin("mypy"), "tuskml/core", env=env, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on embedded defaults (no servers, no downloads): `tuskml demo` into runs/demo
    (about 10 minutes on 2 cores); `nox -s demo -- --quick` is the 1-2 minute tour."""
    env = shared_env(session)
    session.run(_bin("tuskml"), "plugins", "list", env=env, external=True)
    session.run(_bin("tuskml"), "demo", "--out", "runs/demo", *session.posargs, env=env, external=True)
