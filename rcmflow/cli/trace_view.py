"""How `rcmflow trace` and `rcmflow lag` print their results (the queries are in rcmflow.ops)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from rcmflow.ops.lag import LagReport
from rcmflow.ops.trace import Step, Trace
from rcmflow.streams.money import cents_for_people
from rcmflow.streams.topics import ERP_OUTCOMES

__all__ = ["render_trace", "render_lag", "step_line"]


#: What the latency runs to, by the stage of the unit's last timestamped record.
_WHAT = {"raw": "source record", "event": "event", "dlq": "DLQ record",
         "posting": "posting delta", "posting_dlq": "ERP refusal (rcm.postings.dlq)",
         "erp": "ERP outcome (rcm.erp.outcomes)"}


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _money(cents: Any) -> str:
    return cents_for_people(cents) if isinstance(cents, int) else "-"


def step_line(step: Step) -> str:
    """What one step says, in a line: ids, accounts, amounts, codes (no payload)."""
    s = step.summary
    if step.stage == "raw":
        amounts = ", ".join(f"{a['measure']} {a['account']} {_money(a['cents'])}"
                            for a in s.get("amounts", [])[:6])
        ident = s.get("msh_10") or s.get("trace") or s.get("reference") or s["key"]
        return (f"{ident} {s.get('status') or ''}, {s.get('events', 0)} events"
                + (f"; {amounts}" if amounts else ""))
    if step.stage == "event":
        amount = next((v for k, v in s.items() if k.endswith("_cents")), None)
        return (f"{s.get('kind')} {s.get('event_id')} account {s.get('account')}"
                + (f" {_money(amount)}" if amount is not None else ""))
    if step.stage == "posting":
        lines = " / ".join(f"{'Dr' if ln['debit_cents'] else 'Cr'} {ln['gl_account']}"
                           + (" (suspense)" if ln.get("suspense") else "")
                           for ln in s.get("lines", []))
        return (f"{s.get('posting_id')} v{s.get('account_version')} {s.get('event_kind')} "
                f"account {s.get('account')} {_money(s.get('amount_cents'))}: {lines}")
    if step.stage in ("dlq", "posting_dlq"):
        return (f"{s.get('dlq_id')} {s.get('stage_of_failure')} {s.get('reason_code')}: "
                f"{s.get('reason')}")
    committed = s.get("committed_offset")
    if step.topic == ERP_OUTCOMES:  # the connector's own record of it
        group = f"ERP ref {s.get('erp_ref')}" if s.get("erp_ref") else "outcome record"
    elif s.get("group"):
        group = (f"group {s.get('group')} committed "
                 f"{committed if committed is not None else 'nothing'}")
    else:
        group = "no connector group"
    journal = ""
    if "in_erp" in s:
        journal = (f"; in the ERP as {s.get('erp_ref')}" if s["in_erp"]
                   else "; NOT in the ERP's journal")
    return (f"{s.get('adapter')}: {s.get('outcome')} {s.get('posting_id')} ({group})"
            + (f", {s['reason_code']}" if s.get("reason_code") else "") + journal)


def render_trace(found: Trace, out: Console) -> None:
    since = "the whole log" if found.since is None else found.since.isoformat(timespec="seconds")
    out.print(f"trace {found.query}: {len(found.steps)} records since {since} (read "
              f"{sum(found.read.values()):,} records in {found.elapsed_s:.1f} s)",
              soft_wrap=True, highlight=False, markup=False)
    table = Table("time (UTC)", "stage", "where", "what", box=box.SIMPLE_HEAD, pad_edge=False)
    for step in found.steps:
        where = (f"{step.topic}:{step.partition}@{step.offset}"
                 if step.offset is not None else step.topic)
        table.add_row(_when(step.timestamp_ms), step.stage, where, Text(step_line(step)))
    out.print(table)
    if any(step.payload is not None for step in found.steps):
        for step in found.steps:
            if step.payload is not None:
                out.print(f"payload of {step.stage} {step.topic}:{step.partition}@"
                          f"{step.offset}:", highlight=False, markup=False)
                text = step.payload if isinstance(step.payload, str) else json.dumps(
                    step.payload, indent=2)
                out.print(Padding(Text(text), (0, 0, 0, 4)))
    if found.latency_ms is not None:
        out.print(f"end to end: {found.latency_ms / 1000:.3f} s (first source record -> "
                  f"last {_WHAT.get(found.latency_to or '', 'record')})", highlight=False,
                  markup=False)
    outcomes = found.erp_outcomes()
    if outcomes:
        said = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
        note = (" (taken: the connector committed past the delta, so the ERP posted it or had "
                "it already; that connector wrote no outcome record, so no time)"
                if "taken" in outcomes else "")
        out.print(f"ERP: {said}{note}", soft_wrap=True, highlight=False, markup=False)
    elif any(step.stage == "posting" for step in found.steps):
        out.print("ERP: no ERP connector group has committed on rcm.postings yet",
                  highlight=False, markup=False)
    if found.truncated:
        out.print(f"[yellow]cut at {len(found.steps):,} records: trace a narrower id[/yellow]")


def render_lag(report: LagReport, out: Console) -> None:
    table = Table("group", "role", "topic", "partition", "committed", "log end", "lag",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for group in report.groups:
        if not group.partitions:
            table.add_row(group.group, group.role, "-", "-", "no commits", "-", "-")
        for p in group.partitions:
            table.add_row(group.group, group.role, p.topic, str(p.partition),
                          "no commits" if p.committed is None else str(p.committed),
                          str(p.log_end), "?" if p.lag is None else str(p.lag))
        total = group.total_lag
        table.add_row("", "", "", "", "", "total",
                      Text("?" if total is None else str(total), style="bold"),
                      end_section=True)
    facade = report.facade
    if facade is not None and facade.note is None:
        for p in facade.partitions:
            table.add_row("(facade store)", "facade", p.topic, str(p.partition),
                          "nothing yet" if p.committed is None else str(p.committed),
                          str(p.log_end), str(p.lag))
        table.add_row("", "", "", "", "", "total", Text(str(facade.total_lag), style="bold"),
                      end_section=True)
    out.print(table)
    if facade is not None and facade.note is not None:
        out.print(f"facade: {facade.note}", soft_wrap=True, highlight=False, markup=False)
    if report.groups_left_out:
        out.print(f"{report.groups_left_out} more groups not shown", highlight=False)
