"""The docs' ACL table is the one the startup check enforces (rcmflow/runtime/kafka_access.py).

Administrators grant what docs/operations/security.md lists; the preflight refuses what
kafka_access.py does not allow. If the two drifted, a cluster set up from the docs would fail
at start.
"""

from __future__ import annotations

import re
from pathlib import Path

from rcmflow.runtime.kafka_access import documented_components

ACL_PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations" / "security.md"


def _acl_rows() -> dict[str, list[str]]:
    text = ACL_PAGE.read_text()
    section = text.split("## ACLs per component", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for command, acls in re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.MULTILINE):
        rows[command] = [acl.strip() for acl in acls.split(";")]
    return rows


def test_the_docs_list_exactly_the_acls_the_code_checks() -> None:
    documented = _acl_rows()
    expected = {command: [str(binding) for binding in access.acls()]
                for command, access in documented_components().items()}
    assert documented == expected


def test_every_command_that_talks_to_kafka_has_a_row() -> None:
    import typer.main

    from rcmflow.cli import app

    group = typer.main.get_command(app)
    # Commands that use only the embedded broker, or no broker at all.
    offline = {"dev", "broker", "demo", "schema", "ops-user", "ops-login"}
    rows = " ".join(_acl_rows())
    missing = [name for name in group.commands  # type: ignore[attr-defined]
               if name not in offline and f"rcmflow {name}" not in rows]
    assert not missing, missing
