"""promtool (Debian's `prometheus` package) for the deploy/ checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.exported import exported_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path; without it: skipped here, a failure under CI=true (.ci/run installs
    it), as the Apache Kafka fixture does."""
    found = shutil.which("promtool")
    if found is None:
        message = ("promtool not found: `apt-get install -y --no-install-recommends "
                   "prometheus` (Debian) checks deploy/prometheus")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the deploy checks must run in CI)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    return exported_names(tmp_path_factory.mktemp("exported"))
