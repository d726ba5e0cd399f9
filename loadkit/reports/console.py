"""The console summary: the same numbers as the HTML summary table, in plain text."""

from __future__ import annotations

import pandas as pd

from .model import Run
from .tables import fmt_ms, fmt_value, metric_labels


def render(title: str, runs: list[Run], summary: pd.DataFrame, metrics: pd.DataFrame | None = None) -> str:
    lines = [title, "=" * min(len(title), 100)]
    for r in runs:
        for warning in r.warnings:
            lines.append(f"WARNING ({r.tool} {r.label}): {warning}")
    for r in runs:
        dur = r.info.get("duration_s")
        lines.append(f"{r.tool} {r.label}" + (f"  ({dur:.0f} s)" if dur else "") + f"  <- {', '.join(r.sources)}")
        for note in r.notes:
            lines.append(f"    note: {note}")
    lines.append("")
    head = f"{'tool':<7}{'run':<14}{'operation':<24}{'count':>9}{'fail':>7}{'rps':>9}{'p50':>9}{'p90':>9}{'p95':>9}{'p99':>9}{'max':>9}   (ms)"
    lines.append(head)
    lines.append("-" * len(head))
    for row in summary.itertuples(index=False):
        cnt = "–" if pd.isna(row.count) else f"{int(row.count):,}"
        fail = "–" if pd.isna(row.failures) else f"{int(row.failures):,}"
        rps = "–" if pd.isna(row.rps) else f"{row.rps:,.1f}"
        lines.append(
            f"{row.tool:<7}{str(row.run)[:13]:<14}{str(row.operation)[:23]:<24}{cnt:>9}{fail:>7}{rps:>9}"
            f"{fmt_ms(row.p50):>9}{fmt_ms(row.p90):>9}{fmt_ms(row.p95):>9}{fmt_ms(row.p99):>9}{fmt_ms(row.max):>9}"
        )
    if metrics is not None and len(metrics):
        lines.append("")
        head = f"{'tool':<7}{'run':<14}{'loadkit metric':<24}{'kind':<9}{'count':>9}{'p50':>10}{'p90':>10}{'p95':>10}{'p99':>10}{'max':>10}  unit"
        lines += [head, "-" * len(head)]
        for m, label in zip(metrics.to_dict("records"), metric_labels(metrics)):
            cnt = "–" if pd.isna(m["count"]) else f"{int(m['count']):,}"
            values = "".join(f"{fmt_value(m[c]):>10}" for c in ("p50", "p90", "p95", "p99", "max"))
            lines.append(f"{m['tool']:<7}{str(m['run'])[:13]:<14}{label[:23]:<24}{m['kind']:<9}{cnt:>9}{values}  {m['unit']}")
    return "\n".join(lines)
