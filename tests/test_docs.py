"""The docs site builds with no warning: every link, anchor and page is where it says.

``mkdocs build --strict`` turns each warning into a failure: a link to a page or an anchor
that does not exist, a page left out of the nav, a snippet file that is missing, and a
docs/configuration.md that no longer says what the settings classes say
(docs/hooks/configuration.py). It builds offline: no plugin of mkdocs.yml fetches anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A cold build (Material's theme, ~20 pages with the benchmark results) takes a few seconds.
BUILD_TIMEOUT_S = 300


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # cwd: the snippets' base path (bench/*.md) is the repository root.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
        # Material prints a banner about MkDocs 2 on every build otherwise.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    site = tmp_path / "site"
    # The pages a reader reaches from the README, among them the generated and included ones.
    for page in ("configuration", "guarantees", "operations/security", "benchmarks/results",
                 "fhir-conformance"):
        assert (site / page / "index.html").is_file(), page
    # bench/RESULTS.md is included, not linked: its figures are on the page.
    assert "Peak RSS" in (site / "benchmarks" / "results" / "index.html").read_text()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    # A copy of the docs with one link to a page that does not exist.
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    (docs / "index.md").write_text((docs / "index.md").read_text()
                                   + "\n[gone](no-such-page.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((ROOT / "mkdocs.yml").read_text()
                      .replace("docs_dir: docs", f"docs_dir: {docs}")
                      .replace("  - docs/hooks/configuration.py",
                               f"  - {docs / 'hooks' / 'configuration.py'}"))
    done = _build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr, done.stderr


def test_the_configuration_page_is_the_settings(tmp_path: Path) -> None:
    # Its generator, run on the page as committed, changes nothing.
    spec = ROOT / "docs" / "hooks" / "configuration.py"
    done = subprocess.run([sys.executable, "-c", (
        "import runpy, sys; page = runpy.run_path(sys.argv[1]);"
        "sys.stdout.write(page['render']())"), str(spec)],
        capture_output=True, text=True, check=True)
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert done.stdout == committed, (
        "docs/configuration.md is stale: run `python docs/hooks/configuration.py`")


def test_the_readme_links_only_into_the_repository() -> None:
    # README.md is outside docs_dir, so mkdocs does not check it: every link must name a file
    # of the repository (no web address, nothing above the repository root).
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert links
    for link in links:
        target = link.split("#", 1)[0]
        assert "://" not in link and not target.startswith(("/", "..")), link
        assert (ROOT / target).is_file(), f"README.md links to {link}: no such file"
