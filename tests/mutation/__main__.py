"""Mutation testing: ``python -m tests.mutation [--fresh] [MODULE ...]`` (needs the
``mutation`` extra: ``pip install -e '.[mutation]'``).

mutmut changes one thing at a time in the modules below (an operator, a constant, a
comparison...) and runs the fast tests that reach the changed function; a change no test
notices (a *survivor*) is a gap in the tests, or an equivalent change (RELIABILITY.md lists
each one). Modules: core, dedup, ordering, postings, rules, money, write_order (the worker's
per-batch write order), or none for all of them.

Why a wrapper: mutmut imports the mutated copies by the module names their paths spell
(``src/rcmflow/streams/core.py`` -> ``rcmflow.streams.core``), but this repository maps its
top-level folders into ``rcmflow`` (pyproject's ``package-dir``). So the package is first
laid out as it installs, under ``.mutation/src/rcmflow`` (with ``tests/`` beside it), and
mutmut runs there; the repository itself is never touched. The stage keeps mutmut's results
between runs: without MODULE only mutants not yet tested run (new or changed functions);
named modules are tested again; ``--fresh`` starts over.

One test process, under ``nice``: the run takes tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / ".mutation"

#: Short name -> the module's file in the repository.
MODULES = {
    "core": "streams/core.py",
    "dedup": "streams/dedup.py",
    "ordering": "streams/ordering.py",
    "postings": "streams/postings.py",
    "rules": "streams/rules.py",
    "money": "streams/money.py",
    "write_order": "streams/write_order.py",
}
#: The fast tests: the pure core's and the tables' that need no broker (the Faust shell's
#: are left out too).
TESTS = ["tests/streams", "tests/tables", "--ignore=tests/streams/shell"]
PYTEST_ARGS = ["-n", "0", "-m", "not broker", "-p", "no:cacheprovider",
               "-p", "tests.mutation.hypothesis_profile"]

#: mutmut's exit codes, as its ``status_by_exit_code`` reads them.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 37: "type check", -11: "segfault", -9: "segfault"}


def staged(path: str) -> str:
    """``streams/core.py`` -> ``src/rcmflow/streams/core.py`` (where it lives as installed)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folder, name = path.rsplit("/", 1)
    for package, directory in config["tool"]["setuptools"]["package-dir"].items():
        if directory == folder:
            return f"src/{package.replace('.', '/')}/{name}"
    raise ValueError(f"{path} is in no package of pyproject's package-dir")


def stage(fresh: bool) -> None:
    """Lay the package out as installed, copy the tests, write mutmut's configuration."""
    if fresh and STAGE.exists():
        shutil.rmtree(STAGE)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, directory in config["tool"]["setuptools"]["package-dir"].items():
        shutil.copytree(ROOT / directory, STAGE / "src" / package.replace(".", "/"),
                        ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "tests", STAGE / "tests", ignore=ignore, dirs_exist_ok=True)
    pytest_options = dict(config["tool"]["pytest"]["ini_options"])
    pytest_options["addopts"] = "--strict-markers"  # no -n auto: mutmut runs tests in-process
    mutmut = {
        "source_paths": ["src"],
        "only_mutate": [staged(path) for path in MODULES.values()],
        "pytest_add_cli_args_test_selection": TESTS,
        "pytest_add_cli_args": PYTEST_ARGS,
    }
    tools = {"mutmut": mutmut, "pytest": {"ini_options": pytest_options}}
    (STAGE / "pyproject.toml").write_text(toml({"tool": tools}))


def toml(doc: dict[str, object], prefix: str = "") -> str:
    """Just enough TOML for the stage's configuration (tables of strings and lists)."""
    lines: list[str] = []
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for key, value in doc.items():
        if key not in tables:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in tables.items():
        name = f"{prefix}{key}"
        body = toml(value, f"{name}.")
        if any(not isinstance(v, dict) for v in value.values()):
            lines.append(f"\n[{name}]")
        lines.append(body)
    return "\n".join(lines) + "\n"


def statuses(modules: list[str]) -> list[tuple[str, str]]:
    """(mutant, status) of every mutant of ``modules``, from mutmut's result files."""
    found = []
    for module in modules:
        meta = STAGE / "mutants" / f"{staged(MODULES[module])}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        for name, code in codes.items():
            found.append((name, STATUS.get(code, "not checked" if code is None
                                           else "suspicious")))
    return found


def summary(modules: list[str]) -> list[tuple[str, dict[str, int]]]:
    """Per module: mutants by status."""
    rows = []
    for module in modules:
        counts: dict[str, int] = {}
        for _, status in statuses([module]):
            counts[status] = counts.get(status, 0) + 1
        rows.append((module, counts))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"some of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--survivors", action="store_true",
                        help="test again only the mutants that survived or had no test (after "
                        "adding tests: which tests reach which function is found anew)")
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"no module {', '.join(sorted(unknown))}; choose from {', '.join(MODULES)}")
    modules = args.modules or list(MODULES)
    stage(args.fresh)
    # Named modules: their mutants by name (tested again); none: every mutant not yet tested.
    names = [staged(MODULES[m])[len("src/"):-len(".py")].replace("/", ".") + ".*"
             for m in args.modules]
    if args.survivors:
        names = [name for name, status in statuses(args.modules or list(MODULES))
                 if status in ("survived", "no tests")]
        (STAGE / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        if not names:
            print("no survivors")
            return 0
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(["nice", "-n", "15", sys.executable, "-m", "mutmut", "run",
                          "--max-children", "1", *names], cwd=STAGE, env=env, check=False)
    print(f"\n{'module':<12} {'mutants':>8} {'killed':>7} {'survived':>9}  other")
    for module, counts in summary(modules):
        other = {k: v for k, v in counts.items() if k not in ("killed", "survived")}
        print(f"{module:<12} {sum(counts.values()):>8} {counts.get('killed', 0):>7} "
              f"{counts.get('survived', 0):>9}  {other or ''}")
    print(f"\nsurvivors: cd {STAGE.relative_to(ROOT)} && mutmut results; "
          "mutmut show NAME prints one")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
