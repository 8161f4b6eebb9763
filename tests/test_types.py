"""mypy --strict over the installed package, as part of the normal test run.

The import package ``rcmflow`` is assembled from top-level folders by setuptools
``package-dir``, and the editable install resolves it with an import hook mypy does not
follow. So the test lays the sources out as a non-editable install would (the folders copied
to ``<tmp>/rcmflow/...`` as pyproject.toml maps them; copying is ~50x faster than ``pip
install --target``, which also builds in the source tree) and runs mypy there with the
project's configuration. The mypy cache lives in a stable directory per checkout, so only a
cold run checks everything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # One cache per checkout: worktrees of different branches do not evict each other.
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return base / "rcmflow" / "mypy" / checkout


def lay_out_package(target: Path) -> list[str]:
    """Copy each package's modules to where a non-editable install puts them."""
    setuptools = tomllib.loads(PYPROJECT.read_text("utf-8"))["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    packages: list[str] = setuptools["packages"]
    for package in packages:
        source = ROOT / package_dir.get(package, package.replace(".", "/"))
        dest = target.joinpath(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        # Only this folder's modules: subpackages are mapped (and copied) on their own.
        for module in [*source.glob("*.py"), *source.glob("*.pyi"), *source.glob("py.typed")]:
            shutil.copy2(module, dest / module.name)  # mtimes kept: mypy's cache trusts them
    return packages


def test_mypy_strict_passes_on_the_package(tmp_path: Path) -> None:
    packages = lay_out_package(tmp_path)
    assert (tmp_path / "rcmflow" / "streams" / "core.py").is_file(), packages
    # Not skipped when mypy is missing: it is in the `test` extra, so that is a failure.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT),
         "--cache-dir", str(_cache_dir()), "-p", "rcmflow"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        # The layout in tmp_path, not the editable install (or anything on PYTHONPATH).
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")},
    )
    assert proc.returncode == 0, f"mypy exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
