"""matplotlib charts (Agg backend) written as PNG files and returned as base64 for the HTML.

Each chart answers one question and carries its own title, axis units and legend; colours are
fixed per run (and per operation) across charts so a reader can follow one series everywhere.
"""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator  # noqa: E402

from .model import AGGREGATED, Run  # noqa: E402
from .tables import metric_labels, operations_in_order  # noqa: E402

RUN_COLORS = plt.get_cmap("tab10").colors
OP_COLORS = plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
MAX_OPS = 10  # curves per latency-over-time panel (the caption names the ones left out)
MAX_CDF = 12  # panels of the distribution chart
DPI = 100

plt.rcParams.update({"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold", "figure.titlesize": 14,
                     "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})  # fmt: skip


def _run_key(tool: str, run: str) -> str:
    return f"{tool} · {run}"


def _ms_formatter():
    """Tick labels in the axis's own unit (ms on a "(ms)" axis: 2,000, never "2 s")."""

    def f(v, _pos):
        if abs(v) >= 1000 or float(v).is_integer():
            return f"{v:,.0f}"
        return f"{v:g}"

    return FuncFormatter(f)


def _listed(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _coverage(what: str, shown: list[str], all_names: list[str], by: str = "by count") -> str:
    """'all 7 operations', or 'the 10 busiest of 14 operations (by count); not drawn: a, b'."""
    if len(shown) >= len(all_names):
        return f"all {len(all_names)} {what}"
    left = [n for n in all_names if n not in shown]
    return f"top {len(shown)} of {len(all_names)} {what} ({by}); not drawn: {_listed(left)}"


def _log_axis(axis, lo: float | None = None, hi: float | None = None) -> None:
    """Log scale with 1-2-5 ticks in plain ms (no 2x10^0 minor labels colliding); 1-10-100 when wide."""
    decades = np.log10(hi / lo) if lo and hi and lo > 0 else 2
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(_ms_formatter())
    axis.set_minor_formatter(NullFormatter())
    axis.set_minor_locator(NullLocator())  # dozens of unlabelled minor ticks cost seconds of layout


def _maybe_log(ax, values, axis: str = "y") -> None:
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    v = v[v > 0]
    if v.size and v.max() / max(v.min(), 1e-3) > 50:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        _log_axis(ax.yaxis if axis == "y" else ax.xaxis, v.min(), v.max())


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI)  # tight_layout already ran: bbox_inches="tight" would draw everything twice
    plt.close(fig)
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _shade_saturation(axes, runs: list[Run], shown: list[Run]) -> bool:
    """Grey bands where a run's generator was saturated (its ``_saturation.csv``), on its time axis."""
    any_band = False
    for r in shown:
        sat, start = r.saturation, r.info.get("start")
        if sat is None or sat.empty or start is None:
            continue
        for row in sat.itertuples(index=False):
            a, b = (row.start - start).total_seconds(), (row.end - start).total_seconds()
            for ax in axes:
                ax.axvspan(a, b, color="#d92d20", alpha=0.12, lw=0, label="generator CPU ≥ 90 %" if not any_band else None)
            any_band = True
    return any_band


def overview(ts: pd.DataFrame, runs: list[Run], path: Path) -> str | None:
    agg = ts[ts["operation"] == AGGREGATED]
    if agg.empty:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(13, 8.5), sharex=True)
    panels = [("rps", "throughput (requests/s)"), ("users", "users (Locust users / k6 VUs)"), ("errors", "failures/s")]
    drawn = []
    for i, r in enumerate(runs):
        d = agg[(agg["tool"] == r.tool) & (agg["run"] == r.label)].sort_values("t")
        if d.empty:
            continue
        drawn.append(r)
        for ax, (col, _) in zip(axes, panels):
            ax.plot(d["t"], d[col], color=RUN_COLORS[i % 10], lw=1.6, label=_run_key(r.tool, r.label))
    _shade_saturation(axes, runs, drawn)
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
    if not (agg["errors"].fillna(0) > 0).any():
        axes[2].set_ylim(0, 1)
        axes[2].text(0.5, 0.5, "no failures", transform=axes[2].transAxes, ha="center", va="center", color="grey", fontsize=12)
    axes[0].set_title("Throughput, users and failures over time (requests only, all of them; loadkit metrics are not requests)")
    axes[-1].set_xlabel("time since the run's start (s)")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="tool · run")
    fig.tight_layout()
    return _save(fig, path), ""


def latency_over_time(ts: pd.DataFrame, runs: list[Run], summary: pd.DataFrame, path: Path) -> str | None:
    ops_all = operations_in_order(summary)
    shown = [r for r in runs if ((ts["tool"] == r.tool) & (ts["run"] == r.label)).any()]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(13, 3.6 * len(shown) + 0.6), sharex=True, sharey=True, squeeze=False)
    all_vals = []
    captions = []
    for ax, r in zip(axes[:, 0], shown):
        d = ts[(ts["tool"] == r.tool) & (ts["run"] == r.label)]
        # operations seen in at least 3 time steps (one-off calls like login make no curve)
        steps = d.dropna(subset=["p95"]).groupby("operation")["t"].nunique()
        present = set(steps[steps >= 3].index)
        run_ops = [o for o in ops_all if o in set(summary.loc[(summary["tool"] == r.tool) & (summary["run"] == r.label), "operation"])]
        curves = [o for o in run_ops if o in present]
        ops = curves[:MAX_OPS]
        short = [o for o in run_ops if o not in present]
        if not ops and AGGREGATED in present:
            ops = [AGGREGATED]  # Locust without --csv-full-history has only this
            captions.append(f"{_run_key(r.tool, r.label)}: all requests together (Aggregated), no per-operation history")
        elif run_ops:
            text = f"{_run_key(r.tool, r.label)}: " + (_coverage("operations with a curve", ops, curves) if curves else "no curve")
            if short:
                text += f"; fewer than 3 time points, no curve: {_listed(short)}"
            captions.append(text)
        if not ops:
            ax.text(0.5, 0.5, "no latency curve: no operation in 3 or more time steps", transform=ax.transAxes,
                    ha="center", va="center", color="grey", fontsize=11)  # fmt: skip
        window = d["pct_window"].iloc[0] if len(d) else ""
        by_op = {op: g for op, g in d.groupby("operation", sort=False)}
        for op in ops:
            dd = by_op[op].sort_values("t")
            c = OP_COLORS[ops_all.index(op) % len(OP_COLORS)] if op in ops_all else "black"
            ax.plot(dd["t"], dd["p95"], color=c, lw=1.6, label=f"{op} p95")
            ax.plot(dd["t"], dd["p50"], color=c, lw=1.0, ls="--", label=f"{op} p50")
        all_vals.append(d.loc[d["operation"].isin(ops), ["p50", "p95"]].to_numpy().ravel())
        ax.set_title(f"{_run_key(r.tool, r.label)}: latency p50 (dashed) and p95 (solid) — {window}")
        ax.set_ylabel("latency (ms)")
        if ops:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8, ncol=1 if len(ops) <= 6 else 2)
    _maybe_log(axes[0, 0], np.concatenate(all_vals) if all_vals else [])
    axes[0, 0].yaxis.set_major_formatter(_ms_formatter())
    axes[-1, 0].set_xlabel("time since the run's start (s)")
    fig.tight_layout()
    return _save(fig, path), "Shown: " + "; ".join(captions) + "." if captions else ""


def percentiles_by_operation(summary: pd.DataFrame, runs: list[Run], path: Path, ops: list[str] | None = None,
                             what: str = "operations", title: str = "Latency percentiles per operation (p50 / p95 / p99)") -> str | None:  # fmt: skip
    """Whole-run p50/p95/p99 bars of every operation (``ops``: which, in order; all by default), ms axis."""
    ops = operations_in_order(summary) if ops is None else ops
    if not ops:
        return None
    runs = [r for r in runs if ((summary["tool"] == r.tool) & (summary["run"] == r.label)).any()]
    n = len(runs)
    ncols = min(n, 3)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(13, (0.42 * len(ops) + 1.6) * nrows), sharey=True, sharex=True, squeeze=False)
    y = np.arange(len(ops))
    h = 0.26
    pcts = [("p50", "#9ecae1"), ("p95", "#3182bd"), ("p99", "#08306b")]
    vmax = pd.to_numeric(summary.loc[summary["operation"].isin(ops), ["p50", "p95", "p99"]].stack(), errors="coerce")
    for k, r in enumerate(runs):
        ax = axes[k // ncols, k % ncols]
        d = summary[(summary["tool"] == r.tool) & (summary["run"] == r.label)].set_index("operation")
        for j, (col, color) in enumerate(pcts):
            vals = [float(d.at[o, col]) if o in d.index and pd.notna(d.at[o, col]) else 0.0 for o in ops]
            ax.barh(y + (1 - j) * h, vals, height=h, color=color, label=col)
        missing = [i for i, o in enumerate(ops) if o not in d.index]
        for i in missing:
            ax.text(0.01, y[i], "(not in this run)", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="grey")
        ax.set_title(_run_key(r.tool, r.label))
        ax.set_xlabel("latency (ms)")
        ax.tick_params(axis="x", labelbottom=True)
    axes[0, 0].xaxis.set_major_formatter(_ms_formatter())
    _maybe_log(axes[0, 0], vmax, axis="x")
    axes[0, 0].invert_yaxis()
    for k in range(n, nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    axes[0, 0].set_yticks(y, ops)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=3, frameon=False)
    fig.suptitle(title, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97 if nrows > 1 else 0.94))
    return _save(fig, path), f"Shown: all {len(ops)} {what}."


_CDF_PCTS = np.concatenate([np.linspace(0, 90, 91), np.linspace(90.1, 99, 90), np.linspace(99.01, 100, 100)])


def _cdf_points(vals: np.ndarray, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(latency, % of samples at or below) at fixed percentiles: exact for samples, HDR-exact for histograms."""
    if counts is None:
        return np.percentile(vals, _CDF_PCTS, method="inverted_cdf"), _CDF_PCTS
    cum = np.cumsum(counts) / counts.sum() * 100.0
    return vals, cum


def distribution(runs: list[Run], summary: pd.DataFrame, path: Path) -> str | None:
    with_data = [(i, r) for i, r in enumerate(runs) if (r.samples is not None and len(r.samples)) or r.histograms]
    if not with_data:
        return None
    ops = operations_in_order(summary)
    series: dict[str, list] = {op: [] for op in ops}
    for i, r in with_data:
        if r.samples is not None and len(r.samples):
            for op, g in r.samples.groupby("operation", sort=False, observed=True):
                if op in series and len(g):
                    series[op].append((i, r, g["value"].to_numpy(), None))
        else:
            for op, (vals, counts) in r.histograms.items():
                if op in series and counts.sum() > 0:
                    series[op].append((i, r, vals, counts))
    with_series = [op for op in ops if series[op]]
    ops = with_series[:MAX_CDF]
    if not ops:
        return None
    ncols = min(3, len(ops))
    nrows = (len(ops) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(13, 3.3 * nrows + 0.8), squeeze=False)
    for k, op in enumerate(ops):
        ax = axes[k // ncols, k % ncols]
        lo, hi = np.inf, 0.0
        positive = [v[v > 0].min() for _, _, v, _ in series[op] if (v > 0).any()]
        floor = min(positive) * 0.7 if positive else 1e-3  # 0 ms (k6's whole-ms timers) sits at the left edge
        for i, r, vals, counts in series[op]:
            x, y = _cdf_points(vals, counts)
            x = np.maximum(x, floor)
            lo, hi = min(lo, x.min()), max(hi, x.max())
            n = int(counts.sum()) if counts is not None else len(vals)
            ax.step(x, y, where="post", color=RUN_COLORS[i % 10], lw=1.5, label=_run_key(r.tool, r.label))
            ax.annotate(f"n={n:,}", xy=(0.98, 0.04 + 0.09 * [s[0] for s in series[op]].index(i)), xycoords="axes fraction",
                        ha="right", fontsize=8, color=RUN_COLORS[i % 10])  # fmt: skip
        if hi > 3 * lo:
            ax.set_xscale("log")
            _log_axis(ax.xaxis, lo, hi)
            ax.set_xlabel("latency (ms, log scale)")
        else:  # a narrow range has no 1-2-5 tick inside it: a few linear ticks read better
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.set_major_formatter(_ms_formatter())
            ax.set_xlabel("latency (ms)")
        ax.set_title(op, fontsize=11)
        ax.set_ylabel("% of samples ≤ latency")
        ax.set_ylim(0, 101)
    for k in range(len(ops), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    handles: dict = {}
    for ax in axes.ravel():
        for hnd, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, hnd)
    fig.legend(list(handles.values()), list(handles.keys()), loc="upper right", frameon=False, title="tool · run")
    fig.suptitle("Latency distribution per operation (cumulative: share of samples at or below each latency)", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 0.86, 0.97 if nrows > 1 else 0.94))
    return _save(fig, path), "Shown: " + _coverage("operations with samples", ops, with_series) + "."


def metric_latencies(metrics: pd.DataFrame, runs: list[Run], path: Path):
    """p50/p95/p99 of every latency metric in ms; count and rate metrics never go on a ms axis."""
    labels = metric_labels(metrics)  # a name may be two metrics (ktb and chldo unfinished_age)
    is_lat = (metrics["kind"] == "latency") & (metrics["unit"] == "ms")
    if not is_lat.any():
        return None
    frame = metrics[is_lat].assign(operation=labels[is_lat])
    names = list(frame.groupby("operation")["count"].sum().sort_values(ascending=False).index)
    other = sorted(set(labels) - set(names))
    what = "latency metrics in ms" + (f"; not on a ms axis, in the table only: {_listed(other)}" if other else "")
    return percentiles_by_operation(frame, runs, path, ops=names, what=what, title="loadkit latency metrics (p50 / p95 / p99, ms)")


def render_all(runs: list[Run], summary: pd.DataFrame, ts: pd.DataFrame, out_dir: Path,
               metrics: pd.DataFrame | None = None) -> list[tuple[str, str, str, str]]:
    """[(file name, title, base64 PNG, what is shown)] for the charts that have data.

    The last item says which operations a chart draws: all of them, or "top N of M" and the names
    left out, so that no operation disappears from a chart without the caption saying so.
    """
    made = []
    specs = [
        ("throughput_users_errors.png", "Throughput, users and failures over time", lambda p: overview(ts, runs, p)),
        ("latency_over_time.png", "Latency percentiles over time", lambda p: latency_over_time(ts, runs, summary, p)),
        ("percentiles_by_operation.png", "Latency percentiles per operation", lambda p: percentiles_by_operation(summary, runs, p)),
        ("latency_distribution.png", "Latency distribution", lambda p: distribution(runs, summary, p)),
    ]
    if metrics is not None and len(metrics):
        specs.append(("metric_latencies.png", "loadkit latency metrics", lambda p: metric_latencies(metrics, runs, p)))
    for name, title, fn in specs:
        out = fn(out_dir / name)
        if out:
            made.append((name, title, *out))
    return made
