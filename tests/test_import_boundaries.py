"""The tree's boundaries, checked on the source (as Beancount watches its ``core/``): the pure
core imports no Faust, Kafka client or HTTP; the tables sit beneath the Faust shell; inbound
connectors, ERP connectors and the facade never import one another; nothing but the command
line imports the command line. A forbidden import anywhere in a module (inside a function or
under ``TYPE_CHECKING`` too) fails the suite, naming the module and the import."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What each part may not import: (the importing modules' prefix, forbidden prefixes, why).
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("rcmflow.streams", ("faust", "mode", "aiokafka", "kafka", "rocksdict", "httpx",
                         "fastapi", "uvicorn", "starlette", "rcmflow.runtime.kafka",
                         "rcmflow.tables", "rcmflow.facade", "rcmflow.connectors",
                         "rcmflow.audit", "rcmflow.ops", "rcmflow.cli"),
     "the pure core (streams/, not streams/shell/) is plain Python: events in, state and "
     "deltas out"),
    ("rcmflow.tables", ("rcmflow.streams.shell", "rcmflow.facade", "rcmflow.connectors",
                        "rcmflow.audit", "rcmflow.cli"),
     "the tables sit beneath the Faust shell and know nothing of the edges"),
    ("rcmflow.connectors.inbound", ("rcmflow.facade", "rcmflow.connectors.erp",
                                    "rcmflow.streams.shell", "rcmflow.tables", "rcmflow.cli"),
     "inbound connectors publish to topics; they never reach into the worker, the ERP "
     "side or the facade"),
    ("rcmflow.connectors.erp", ("rcmflow.facade", "rcmflow.connectors.inbound",
                                "rcmflow.streams.shell", "rcmflow.tables", "rcmflow.cli"),
     "ERP connectors read rcm.postings; they never reach into the inbound side or the facade"),
    ("rcmflow.facade", ("rcmflow.connectors", "rcmflow.streams.shell", "rcmflow.tables",
                        "rcmflow.audit", "rcmflow.ops", "rcmflow.cli"),
     "the facade reads rcm.accounts; it never imports connectors or the worker"),
    ("rcmflow.runtime", ("rcmflow.facade", "rcmflow.connectors", "rcmflow.audit", "rcmflow.ops",
                         "rcmflow.cli", "rcmflow.tables"),
     "the shared runtime is beneath every subsystem"),
    ("rcmflow.audit", ("rcmflow.facade", "rcmflow.cli"), "reconcile reads topics only"),
    ("rcmflow.ops", ("rcmflow.cli", "rcmflow.facade", "rcmflow.streams.shell"),
     "operators' tools read and write topics; the command line and the ops page sit on them"),
]
#: Parts of a prefix that a rule does not cover (the Faust shell is not the pure core).
EXEMPT = {"rcmflow.streams": ("rcmflow.streams.shell",)}


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / path
            for name, path in config["tool"]["setuptools"]["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    dirs = package_dirs()
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in folder.glob("*.py"):
            found[package if path.name == "__init__.py" else f"{package}.{path.stem}"] = path
    return found


def imports(module: str, source: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every import in ``source``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from rcmflow.runtime import metrics` imports a module
                yield node.lineno, f"{base}.{alias.name}"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """``sources``: module -> (its source, whether it is a package's __init__)."""
    found: list[str] = []
    for module, (source, is_package) in sorted(sources.items()):
        lines_found: set[int] = set()
        for prefix, forbidden, why in RULES:
            if not _under(module, prefix) or any(
                    _under(module, e) for e in EXEMPT.get(prefix, ())):
                continue
            for line, name in imports(module, source, is_package):
                if line not in lines_found and any(_under(name, f) for f in forbidden):
                    lines_found.add(line)  # one finding per import statement
                    found.append(f"{module}:{line} imports {name} ({why})")
    return found


def test_every_part_keeps_to_its_side() -> None:
    sources = {m: (p.read_text(), p.name == "__init__.py") for m, p in modules().items()}
    assert len(sources) > 80, "the package's modules were not found"
    assert violations(sources) == []


@pytest.mark.parametrize(("module", "source"), [
    ("rcmflow.streams.core", "import faust\n"),
    ("rcmflow.streams.rules", "def f():\n    from aiokafka import AIOKafkaProducer\n"),
    ("rcmflow.streams.core", "from rcmflow.tables.account_tables import AccountTables\n"),
    ("rcmflow.tables.account_tables", "from rcmflow.streams.shell.worker import Worker\n"),
    ("rcmflow.facade.store", "from rcmflow.connectors.inbound.x12 import ingest\n"),
    ("rcmflow.connectors.inbound.hl7.mapping", "from rcmflow.facade import store\n"),
    ("rcmflow.connectors.erp.runner", "from ..inbound.files import publish\n"),
    ("rcmflow.runtime.settings", "from rcmflow import cli\n"),
])
def test_a_forbidden_import_is_found(module: str, source: str) -> None:
    assert len(violations({module: (source, False)})) == 1


def test_the_faust_shell_may_import_faust() -> None:
    assert violations({"rcmflow.streams.shell.worker": ("import faust\n", False)}) == []
