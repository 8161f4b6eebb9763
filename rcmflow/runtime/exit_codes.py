"""The exit codes of every `rcmflow` command: one number, one meaning, whatever the command.

The one table of them is ``MEANINGS``; `rcmflow --help` prints it and docs/operations/cli.md
shows it (tests/test_exit_codes.py keeps both equal to it). A command's own help says which
of them it uses and when. Plain Python only: `rcmflow --help` imports it.
"""

from __future__ import annotations

import textwrap
from enum import IntEnum

__all__ = ["ExitCode", "MEANINGS", "help_table", "markdown_table"]


class ExitCode(IntEnum):
    """What a command's exit status tells a script or a supervisor (meanings: ``MEANINGS``)."""

    OK = 0
    ATTENTION = 1
    REFUSED = 2
    BROKER = 3
    ERP_CONFIG = 4
    PROCESS_EXITED = 5
    INTERNAL = 6


#: Each code's meaning, for people: the rows of the one table.
MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done; a long-running command stopped as asked (Ctrl-C, SIGTERM, --idle-exit, "
                 "--once)",
    ExitCode.ATTENTION: "done, but the answer needs a look: input went to rcm.dlq (ingest), "
                        "the books differ (reconcile), an account differs from its deltas "
                        "(audit) or its aged AR from its buckets (aging), the rebuilt state "
                        "is not the live one (rebuild --compare), "
                        "no such account or DLQ record, or several "
                        "(accounts show|history, dlq show)",
    ExitCode.REFUSED: "refused, running again fails the same way until it is fixed: a bad "
                      "argument or RCMFLOW_* setting, a file over its bound, no broker "
                      "configured, a port or data dir taken, the broker refused the login or "
                      "an ACL",
    ExitCode.BROKER: "the broker was unreachable or did not acknowledge; nothing is committed "
                     "past what it acknowledged: run the same command again (it is safe)",
    ExitCode.ERP_CONFIG: "the ERP adapter is misconfigured, or the ERP refused its login "
                         "(erp, reconcile --erp): fix the RCMFLOW_ERP_* settings",
    ExitCode.PROCESS_EXITED: "a process the command runs exited by itself (dev: the broker, "
                             "worker, facade or MLLP listener; broker: Tansu); its log says why",
    ExitCode.INTERNAL: "rcmflow failed in a way it does not expect (a bug): the traceback on "
                       "stderr says where (please report it); what was committed before it "
                       "stands",
}


def help_table() -> str:
    """The table as `rcmflow --help` prints it (click keeps ``\\b`` paragraphs as written):
    76 columns, so with click's indent it fits an 80-column terminal."""
    rows = [textwrap.fill(MEANINGS[code], 76, break_on_hyphens=False,
                          initial_indent=f"  {code.value}  ",
                          subsequent_indent="     ") for code in ExitCode]
    return "\b\nExit codes (every command):\n" + "\n".join(rows)


def markdown_table() -> str:
    """The table as docs/operations/cli.md shows it."""
    rows = [f"| {code.value} | `{code.name}` | {MEANINGS[code].replace('|', chr(92) + '|')} |"
            for code in ExitCode]
    return "\n".join(["| exit | name | meaning |", "|---|---|---|", *rows])
