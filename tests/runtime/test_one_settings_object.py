"""One settings object: the environment is read in two places only, ``settings.py`` (every
``RCMFLOW_*`` setting) and ``faults.py`` (test-only fault injection); everything else is
handed what it needs. And the fault variable says exactly what ``Faults`` writes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from rcmflow.runtime.faults import FAULTS_ENV, NO_FAULTS, Faults, from_environment
from tests.test_import_boundaries import modules

#: The modules that may read the environment, and why.
READERS = {
    "rcmflow.runtime.settings": "the settings object",
    "rcmflow.runtime.faults": "test-only fault injection, read once at start",
    "rcmflow.cli.dev": "copies the environment into the processes it starts",
}


def environment_reads(source: str) -> list[int]:
    """Lines that read the environment: os.environ, os.getenv, a BaseSettings class."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name | ast.Attribute) and ast.unparse(b).endswith(
                    "BaseSettings") for b in node.bases):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in ("environ", "getenv") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_nothing_but_the_settings_and_the_fault_hooks_reads_the_environment() -> None:
    found = {module: lines for module, path in modules().items()
             if module not in READERS and (lines := environment_reads(path.read_text()))}
    assert found == {}


@pytest.mark.parametrize("source", [
    "import os\nlimit = os.environ.get('RCMFLOW_X')\n",
    "from os import getenv\n",
    "from pydantic_settings import BaseSettings\nclass More(BaseSettings):\n    pass\n",
])
def test_an_environment_read_is_found(source: str) -> None:
    assert environment_reads(source)


@pytest.mark.parametrize("faults", [
    Faults(worker_kill_at=("outputs-acked", 3)),
    Faults(worker_pause_at=(0, 0)),
    Faults(worker_skip_at=(0, 40, 25)),
    Faults(erp_kill_after=5, consume_kill_after=2),
    Faults(erp_kill_before=2, mllp_kill_after_ack=1),
    Faults(break_dedup=True, break_erp_commit_first=True, break_mllp_ack_first=True),
    NO_FAULTS,
])
def test_faults_reach_a_child_process_as_written(faults: Faults) -> None:
    assert from_environment(faults.environment()) == faults


@pytest.mark.parametrize("text", ["worker_kil_at=processed:1", "worker_kill_at=procesed:1",
                                  "erp_kill_after=three", "worker_pause_at=0",
                                  "worker_skip_at=0:40", "worker_skip_at=0:40:0",
                                  "break_dedup=yes", "break_dedup", "brake_dedup=1"])
def test_a_misspelt_fault_is_refused_not_ignored(text: str) -> None:
    with pytest.raises(ValueError, match=FAULTS_ENV):
        from_environment({FAULTS_ENV: text})


def test_a_worker_started_with_a_misspelt_fault_exits_2_at_once(tmp_path: Path) -> None:
    """A crash test whose kill never happens would pass for the wrong reason."""
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "worker"], capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               FAULTS_ENV: "worker_kill_at=x:1"})
    assert done.returncode == 2, done.stderr
    assert "worker_kill_at" in done.stderr
