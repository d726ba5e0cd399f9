"""Which (type, name) is a loadkit metric rather than a request, with its unit and kind.

Why the report needs it: runs recorded before loadkit had its own metric channel (issue #13) sent
every chldo phase and per-turn figure and every KTB delivery to Locust as a *request*, so their
``_stats.csv`` (and k6 runs of the loadkit scripts, whose Trends carry the same names) mix
requests with figures such as ``chunks`` or ``chunks_per_s``. The report classifies those rows by
the one catalog, :mod:`loadkit.metrics.catalog`, shows them as metrics in their unit and keeps them
out of requests/s and throughput. Newer runs also write ``<prefix>_metrics.csv``; its rows are
metrics whatever the catalog says.
"""

from __future__ import annotations

from loadkit.metrics.catalog import CATALOG, KINDS  # noqa: F401 - KINDS: the order the report shows them

#: ``{(type, name): (unit, kind)}`` of every metric the catalog knows
METRICS: dict[tuple[str, str], tuple[str, str]] = {key: (m.unit, m.kind) for key, m in CATALOG.items()}


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
