"""Which (type, name) is a loadkit metric rather than a request, with its unit and kind.

Why the report needs it: runs recorded before loadkit had its own metric channel (issue #13) sent
every chldo phase and per-turn figure and every KTB delivery to Locust as a *request*, so their
``_stats.csv`` (and k6 runs of the loadkit scripts, whose Trends carry the same names) mix
requests with figures such as ``chunks`` or ``chunks_per_s``. The report classifies those rows by
this one list, shows them as metrics in their unit and keeps them out of requests/s and
throughput. Newer runs also write ``<prefix>_metrics.csv``; its rows are metrics whatever this list
says.

The list itself belongs to ``loadkit.metrics.catalog.METRICS`` (``{(type, name): (unit, kind)}``);
until that module exists the same table is kept here, and only here. When the catalog lands,
delete the fallback table below.
"""

from __future__ import annotations

try:  # the one catalog, once it exists
    from loadkit.metrics.catalog import METRICS  # type: ignore[import-not-found]
except ImportError:  # fallback until loadkit/metrics/catalog.py lands: delete it then
    METRICS: dict[tuple[str, str], tuple[str, str]] = {
        ("chldo", "time_to_start"): ("ms", "latency"),
        ("chldo", "ttft"): ("ms", "latency"),
        ("chldo", "som_to_eom"): ("ms", "latency"),
        ("chldo", "first_voice"): ("ms", "latency"),
        ("chldo", "chunk_gap"): ("ms", "latency"),
        ("chldo", "chunk_gap_max"): ("ms", "latency"),
        ("chldo", "voice_ms"): ("ms", "latency"),
        ("chldo", "chunks"): ("count", "count"),
        ("chldo", "chars"): ("count", "count"),
        ("chldo", "chunks_per_s"): ("1/s", "rate"),
        ("ktb", "delivery"): ("ms", "latency"),
        ("ktb", "read_receipt"): ("ms", "latency"),
        ("ktb", "leave_seen"): ("ms", "latency"),
    }

#: the kinds in the order the report shows them
KINDS = ("latency", "count", "rate")


def lookup(typ: str, name: str) -> tuple[str, str] | None:
    """``(unit, kind)`` of a known metric, else None (a request).

    An exact ``(type, name)`` match first; a row without a type (k6 Trends, hand-written CSVs)
    matches a name the catalog knows under exactly one type.
    """
    found = METRICS.get((typ or "", name))
    if found is not None or typ:
        return found
    hits = {v for (t, n), v in METRICS.items() if n == name}
    return hits.pop() if len(hits) == 1 else None
