"""docs/configuration.md, written from the settings classes' field descriptions.

The page is committed (readable in the repository as it is) and never edited by hand: run
``python docs/hooks/configuration.py`` to write it again. As an MkDocs hook (mkdocs.yml
``hooks:``) it compares the committed page with what the settings say before each build and
warns when they differ, so ``mkdocs build --strict`` (tests/test_docs.py) fails on a stale page.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PAGE = Path(__file__).resolve().parents[1] / "configuration.md"
REGENERATE = "python docs/hooks/configuration.py"

#: The settings classes, in page order: (module, class, section title). A module that no
#: longer exists is skipped (its fields moved into ``Settings``, which the page then shows).
SOURCES = [
    ("rcmflow.runtime.settings", "Settings", None),
]

#: Flat fields of a class are grouped by the start of their name, the longest match wins.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("Broker and secure connections", ("broker", "kafka_", "app_id", "partitions",
                                       "replication_factor")),
    ("Metrics", ("metrics_host", "worker_metrics_port", "erp_metrics_port",
                 "mllp_metrics_port", "consume_metrics_port")),
    ("FHIR facade", ("facade_",)),
    ("HL7 v2 and MLLP", ("mllp_", "hl7_")),
    ("X12", ("x12_",)),
    ("Payment files", ("payments_",)),
    ("FHIR inbound", ("fhir_",)),
    ("Drop folder and DLQ payloads", ("watch_", "dlq_")),
    ("rcmflow consume", ("consume_",)),
    ("ERP connectors", ("erp_",)),
    ("Cloud ERPs", ("erp_netsuite_", "erp_odoo_", "erp_erpnext_", "erp_cloud_")),
]
GENERAL = "Worker, tables and general"

INTRO = """\
# Configuration

<!-- Generated from the settings classes by docs/hooks/configuration.py: do not edit.
     Run `python docs/hooks/configuration.py` after changing a setting. -->

rcmflow reads its settings from `RCMFLOW_*` environment variables, once at start, into one
frozen settings object (`rcmflow/runtime/settings.py`), passed down to every part. A misspelt
name is ignored, so check the name against this page. Lists and maps are JSON
(`RCMFLOW_HL7_FT1_TYPES='{"CG":"charge"}'`); sizes are bytes, `_s` is seconds.
A value out of range stops the command at start with the setting's name. `rcmflow --help`
lists every command; command-line options (such as `--metrics-port`) override settings.

This page is written from the fields' own descriptions, so it says what the code does.
"""


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed at start"
    value = field.default
    if value is PydanticUndefined or value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        # The builder's home directory is not the reader's.
        home = str(Path.home())
        text = str(value)
        return "`" + ("~" + text[len(home):] if text.startswith(home) else text) + "`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:,}`" if isinstance(value, int) and abs(value) >= 10_000 else f"`{value}`"
    if isinstance(value, dict | list):
        return "`" + json.dumps(value, separators=(",", ":")) + "`"
    return f"`{value}`" if str(value) else "empty"


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(item, name, None)
            if bound is not None:
                parts.append(f"{sign} {bound:,}" if isinstance(bound, int) else f"{sign} {bound}")
    return ", ".join(parts)


def _kind(field: FieldInfo) -> str:
    """What a value may be: the choices of a Literal, else the bounds."""
    annotation = field.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    for arg in args:
        if get_origin(arg) is Literal:
            return "one of " + ", ".join(f"`{a}`" for a in get_args(arg))
    return _bounds(field)


def _nested_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _env_name(prefix: str, name: str, field: FieldInfo) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else None
    return (alias or prefix + name).upper()


def _group_of(name: str) -> str:
    matches = [(len(s), title) for title, starts in GROUPS for s in starts
               if name == s or (s.endswith("_") and name.startswith(s))]
    return max(matches)[1] if matches else GENERAL


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    """(group, table row) for each flat field; a nested model's fields form their own group."""
    delimiter = str(model.model_config.get("env_nested_delimiter") or "__")
    for name, field in model.model_fields.items():
        nested = _nested_model(field)
        if nested is not None:
            title = field.description or (nested.__doc__ or name).strip().splitlines()[0]
            for _, row in _rows(nested, prefix + name + delimiter):
                yield title, row
            continue
        meaning = field.description or ""
        kind = _kind(field)
        if kind:
            meaning = f"{meaning} ({kind})" if meaning else kind
        yield _group_of(name), (f"| `{_env_name(prefix, name, field)}` | {_default(field)} | "
                                f"{_cell(meaning)} |")


def _sections(model: type[BaseModel], title: str | None) -> list[str]:
    prefix = str(model.model_config.get("env_prefix") or "")
    grouped: dict[str, list[str]] = {}
    for group, row in _rows(model, prefix):
        grouped.setdefault(title or group, []).append(row)
    order = [GENERAL] + [t for t, _ in GROUPS]
    out: list[str] = []
    for group in sorted(grouped, key=lambda g: order.index(g) if g in order else len(order)):
        out += ["", f"## {group}", "", "| variable | default | meaning |", "|---|---|---|",
                *grouped[group]]
    return out


def render() -> str:
    """The whole page, from the settings classes as they are now."""
    lines = INTRO.rstrip("\n").split("\n")
    for module_name, class_name, title in SOURCES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        model: Any = getattr(module, class_name)
        lines += _sections(model, title)
    return "\n".join(lines) + "\n"


def on_pre_build(config: Any) -> None:
    """MkDocs hook: warn (a failure under --strict) when the committed page is stale."""
    if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != render():
        logging.getLogger("mkdocs.hooks.configuration").warning(
            "docs/configuration.md differs from the settings' field descriptions: run `%s`",
            REGENERATE)


if __name__ == "__main__":
    PAGE.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {PAGE}\n")
