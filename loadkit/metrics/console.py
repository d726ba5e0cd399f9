"""Console tables: requests and loadkit metrics in separate blocks, each value with its unit.

Why separate: Locust's console table is for requests (its "# reqs", "req/s" and "(ms)" columns
and its Aggregated row only mean something for those). loadkit's metrics (ttft, delivery, chunks,
...) are printed in a block of their own, in their own units, so that no count or rate is ever
read as milliseconds and no phase is counted as a request.

Used by headless Locust runs (every ``CONSOLE_STATS_INTERVAL_SEC`` unless ``--only-summary``, and
once at the end) and by ``loadkit demo``'s summary. Pure formatting: rows in, lines out.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from loadkit.metrics.catalog import KINDS

METRIC_HEADER = "loadkit metrics (not requests: exact HDR percentiles, each in its unit)"


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def metrics_table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Lines of the metrics block from ``_metrics.csv``-shaped rows (Type, Name, Kind, Unit, Count,
    50%, 90%, 99%, Max); empty when there is no metric."""
    rows = sorted(rows, key=lambda r: (KINDS.index(r["Kind"]) if r.get("Kind") in KINDS else 9,
                                       str(r.get("Type")), str(r.get("Name"))))
    if not rows:
        return []
    lines = [METRIC_HEADER,
             f"{'type':<7} {'name':<30} {'kind':<8} {'samples':>9} {'p50':>11} {'p90':>11} {'p99':>11} {'max':>11}  unit"]
    for r in rows:
        lines.append(
            f"{str(r.get('Type'))[:7]:<7} {str(r.get('Name'))[:30]:<30} {str(r.get('Kind'))[:8]:<8} "
            f"{int(_num(r.get('Count'))):>9} {_num(r.get('50%')):>11.3f} {_num(r.get('90%')):>11.3f} "
            f"{_num(r.get('99%')):>11.3f} {_num(r.get('Max')):>11.3f}  {r.get('Unit', '')}"
        )
    return lines


def _utc(epoch: Any) -> str:
    import time

    return time.strftime("%H:%M:%S", time.gmtime(_num(epoch)))


def saturation_lines(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Lines saying whether a load generator was CPU-saturated, from ``_saturation.csv``-shaped
    rows (Worker, Start, End, Seconds, Mean CPU %, Peak CPU %). Always at least one line: "none"
    is a finding too."""
    from loadkit.metrics.saturation import MIN_SECONDS, THRESHOLD_PERCENT

    rows = list(rows)
    rule = f"≥ {THRESHOLD_PERCENT:g} % of a CPU core for ≥ {MIN_SECONDS:g} s"
    if not rows:
        return [f"generator saturation: none (no load-generator process stayed {rule})"]
    total = sum(_num(r.get("Seconds")) for r in rows)
    lines = [f"generator saturation: {len(rows)} interval{'s' if len(rows) != 1 else ''} ({total:.1f} s) in which a "
             f"load generator stayed {rule}; latencies measured then include client-side queueing"]
    for r in rows:
        lines.append(f"  {r.get('Worker')}: {_utc(r.get('Start'))}–{_utc(r.get('End'))} UTC ({_num(r.get('Seconds')):.1f} s), "
                     f"mean {_num(r.get('Mean CPU %')):.0f} %, peak {_num(r.get('Peak CPU %')):.0f} % CPU")
    return lines
