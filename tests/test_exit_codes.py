"""One exit-code table for every command, and one root for rcmflow's exceptions.

Scripts and supervisors read an exit status without knowing which command gave it: each
number means one thing everywhere (``ExitCode``), and the table people read (`rcmflow --help`,
docs/operations/cli.md) is that enum. Checked on the source, as the import boundaries are: a
bare number handed to ``typer.Exit``/``sys.exit``/``SystemExit`` or an ``EXIT_*`` constant of
a module's own fails, naming the place.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from rcmflow.cli.main import app
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.exceptions import RcmflowError
from rcmflow.runtime.exit_codes import MEANINGS, ExitCode, markdown_table
from tests.test_import_boundaries import ROOT, modules

EXITS = {"Exit", "exit", "SystemExit"}  # typer.Exit(...), sys.exit(...), raise SystemExit(...)
#: Exception classes rcmflow may derive from (a subclass of one of them must derive from
#: RcmflowError too).
BUILTIN_ERRORS = {"Exception", "ValueError", "RuntimeError", "OSError", "KeyError",
                  "TypeError", "LookupError", "IOError", "ConnectionError", "TimeoutError"}
#: Exceptions not (yet) under RcmflowError (name -> module): none.
NOT_YET: dict[str, str] = {}


def _bare_exit_codes(source: str) -> list[int]:
    """Lines where an exit is given a number (or an expression holding one) instead of an
    ``ExitCode``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in EXITS and any(isinstance(n, ast.Constant) and type(n.value) is int
                                 for n in ast.walk(node.args[0])):
            found.append(node.lineno)
    return found


def _own_exit_constants(source: str) -> list[str]:
    """Module-level ``EXIT_*`` names: exit codes a module keeps for itself."""
    tree = ast.parse(source)
    return [t.id for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets
            for t in (target.elts if isinstance(target, ast.Tuple) else [target])
            if isinstance(t, ast.Name) and t.id.startswith("EXIT_")]


def test_every_command_exits_with_a_code_of_the_table() -> None:
    found = [f"{module}:{line}" for module, path in sorted(modules().items())
             for line in _bare_exit_codes(path.read_text())]
    found += [f"{module}: {name}" for module, path in sorted(modules().items())
              for name in _own_exit_constants(path.read_text())]
    assert len(modules()) > 80, "the package's modules were not found"
    assert found == [], "exit codes must come from rcmflow.runtime.exit_codes.ExitCode"


def test_a_bare_exit_code_is_found() -> None:
    assert _bare_exit_codes("raise typer.Exit(2)\n") == [1]
    assert _bare_exit_codes("x = 1\nraise typer.Exit(1 if bad else 0) from None\n") == [2]
    assert _bare_exit_codes("sys.exit(3)\n") == [1]
    assert _bare_exit_codes("raise typer.Exit(ExitCode.REFUSED)\nsys.exit(main())\n") == []
    assert _own_exit_constants("EXIT_OK, EXIT_BROKER = 0, 4\n") == ["EXIT_OK", "EXIT_BROKER"]


def test_each_code_has_one_meaning() -> None:
    assert set(MEANINGS) == set(ExitCode)
    assert [code.value for code in ExitCode] == list(range(len(ExitCode)))
    # Unix's conventions hold: 0 is success, and the codes a shell keeps for itself are free.
    assert ExitCode.OK == 0 and max(ExitCode) < 126


def test_the_documented_table_is_the_enum() -> None:
    page = (ROOT / "docs" / "operations" / "cli.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- exit-codes:[^>]*-->\n(.*?)\n<!-- /exit-codes -->", page, re.S)
    assert found, "docs/operations/cli.md has lost its exit-code table"
    assert found.group(1) == markdown_table(), (
        "docs/operations/cli.md's exit codes differ from ExitCode: paste markdown_table()")


def test_rcmflow_help_prints_the_table() -> None:
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "240"})
    assert shown.exit_code == 0, shown.output
    assert "Exit codes (every command)" in shown.output
    text = " ".join(shown.output.split())
    for code in ExitCode:
        # Wrapped over lines in the help; the words, in order, are the table's.
        assert f"{code.value} {MEANINGS[code]}" in text, code


def test_the_table_fits_an_80_column_terminal() -> None:
    """Lines wider than the terminal are re-wrapped by the help's renderer: their tails land
    at the left margin, out of the table's columns."""
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    table = shown.output[shown.output.index("Exit codes"):].splitlines()[1:]
    rows = [line.rstrip() for line in table if line.strip()]
    assert rows and all(re.match(r" {3}\d  \S| {6}\S", row) for row in rows), rows
    assert "--idle-exit" in shown.output  # an option's name is not broken at its hyphen


def test_rcmflows_exceptions_share_one_root() -> None:
    missing = []
    for module, path in sorted(modules().items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            if bases & BUILTIN_ERRORS and "RcmflowError" not in bases \
                    and node.name != "RcmflowError" and NOT_YET.get(node.name) != module:
                missing.append(f"{module}.{node.name}")
    assert missing == [], "derive these from rcmflow.runtime.exceptions.RcmflowError"


#: Where each part keeps its exceptions (the tree's packages, one file each).
EXCEPTION_MODULES = {"rcmflow.runtime.exceptions", "rcmflow.ops.exceptions",
                     "rcmflow.streams.exceptions", "rcmflow.facade.exceptions",
                     "rcmflow.connectors.inbound.exceptions",
                     "rcmflow.connectors.erp.exceptions", "rcmflow.audit.exceptions"}


def test_each_package_keeps_its_exceptions_in_its_exceptions_module() -> None:
    """A newcomer finds every error a part raises in one file; private control-flow
    exceptions (``_Stop``) stay beside the code that raises and catches them."""
    known = {"RcmflowError"}
    found: dict[str, str] = {}
    for _ in range(3):  # subclasses of subclasses
        for module, path in sorted(modules().items()):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and \
                        {b.id for b in node.bases if isinstance(b, ast.Name)} & known:
                    known.add(node.name)
                    found[node.name] = module
    elsewhere = sorted(f"{module}.{name}" for name, module in found.items()
                       if module not in EXCEPTION_MODULES)
    assert elsewhere == [], "move these into their package's exceptions.py"
    assert set(found.values()) == EXCEPTION_MODULES


def test_the_root_catches_them_and_old_handlers_still_do() -> None:
    from rcmflow.connectors.erp.exceptions import AdapterConfigError
    from rcmflow.streams.exceptions import ChartError, MoneyError

    assert issubclass(AdapterConfigError, RcmflowError)
    # Still what callers caught before: `except ValueError` (pydantic validators too).
    assert issubclass(ChartError, ValueError) and issubclass(MoneyError, ValueError)
    try:
        raise ChartError("no such chart")
    except RcmflowError as exc:
        assert str(exc) == "no such chart"



def test_a_misconfigured_erp_adapter_is_the_same_code_for_erp_and_reconcile(
        tmp_path: Path) -> None:
    # No NetSuite URL or token. The broker is not there: both commands leave it to later, and
    # the adapter's settings are refused first.
    env = {"RCMFLOW_BROKER": f"kafka://127.0.0.1:{free_port()}", "RCMFLOW_DATA_DIR": str(tmp_path),
           "RCMFLOW_ERP_NETSUITE_URL": "", "RCMFLOW_ERP_NETSUITE_TOKEN": ""}
    for command in (["erp", "netsuite"], ["reconcile", "--erp", "netsuite"]):
        done = CliRunner().invoke(app, command, env=env)
        assert done.exit_code == ExitCode.ERP_CONFIG, (command, done.output)
        assert "RCMFLOW_ERP_NETSUITE_URL" in done.output, done.output


def test_an_unexpected_failure_is_its_own_code_with_the_traceback() -> None:
    """A bug is not "needs a look" (1): a supervisor tells it apart, the traceback says where."""
    script = ("import importlib\n"
              "cli = importlib.import_module('rcmflow.cli.main')\n"
              "@cli.app.command('boom')\n"
              "def boom() -> None:\n"
              "    raise RuntimeError('an unexpected state')\n"
              "cli.main()\n")
    done = subprocess.run([sys.executable, "-c", script, "boom"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == ExitCode.INTERNAL, done.stderr
    assert "Traceback" in done.stderr and "RuntimeError: an unexpected state" in done.stderr
