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

from .model import AGGREGATED, NOT_LATENCY, Run  # noqa: E402
from .tables import operations_in_order  # noqa: E402

RUN_COLORS = plt.get_cmap("tab10").colors
OP_COLORS = plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
MAX_OPS = 10
DPI = 100

plt.rcParams.update({"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold", "figure.titlesize": 14,
                     "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})  # fmt: skip


def _run_key(tool: str, run: str) -> str:
    return f"{tool} · {run}"


def _ms_formatter():
    def f(v, _pos):
        if v >= 1000:
            return f"{v / 1000:g} s"
        return f"{v:g}"

    return FuncFormatter(f)


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


def overview(ts: pd.DataFrame, runs: list[Run], path: Path) -> str | None:
    agg = ts[ts["operation"] == AGGREGATED]
    if agg.empty:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(13, 8.5), sharex=True)
    panels = [("rps", "throughput (requests/s)"), ("users", "users (Locust users / k6 VUs)"), ("errors", "failures/s")]
    for i, r in enumerate(runs):
        d = agg[(agg["tool"] == r.tool) & (agg["run"] == r.label)].sort_values("t")
        if d.empty:
            continue
        for ax, (col, _) in zip(axes, panels):
            ax.plot(d["t"], d[col], color=RUN_COLORS[i % 10], lw=1.6, label=_run_key(r.tool, r.label))
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
    if not (agg["errors"].fillna(0) > 0).any():
        axes[2].set_ylim(0, 1)
        axes[2].text(0.5, 0.5, "no failures", transform=axes[2].transAxes, ha="center", va="center", color="grey", fontsize=12)
    axes[0].set_title("Throughput, users and failures over time (all operations)")
    axes[-1].set_xlabel("time since the run's start (s)")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="tool · run")
    fig.tight_layout()
    return _save(fig, path)


def latency_over_time(ts: pd.DataFrame, runs: list[Run], summary: pd.DataFrame, path: Path) -> str | None:
    ops_all = operations_in_order(summary)
    shown = [r for r in runs if ((ts["tool"] == r.tool) & (ts["run"] == r.label)).any()]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(13, 3.6 * len(shown) + 0.6), sharex=True, sharey=True, squeeze=False)
    all_vals = []
    for ax, r in zip(axes[:, 0], shown):
        d = ts[(ts["tool"] == r.tool) & (ts["run"] == r.label)]
        # operations seen in at least 3 time steps (one-off calls like login make no curve)
        steps = d.dropna(subset=["p95"]).groupby("operation")["t"].nunique()
        present = set(steps[steps >= 3].index)
        ops = [o for o in ops_all if o in present][:MAX_OPS]
        if not ops and AGGREGATED in present and not set(d["operation"]) & set(NOT_LATENCY):
            ops = [AGGREGATED]  # Locust without --csv-full-history has only this
        if not ops:
            ax.text(0.5, 0.5, "too short for curves: no operation in 3 or more time steps", transform=ax.transAxes,
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
    axes[-1, 0].set_xlabel("time since the run's start (s)")
    fig.tight_layout()
    return _save(fig, path)


def percentiles_by_operation(summary: pd.DataFrame, runs: list[Run], path: Path) -> str | None:
    ops = operations_in_order(summary, limit=16)
    if not ops:
        return None
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
    _maybe_log(axes[0, 0], vmax, axis="x")
    axes[0, 0].invert_yaxis()
    for k in range(n, nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    axes[0, 0].set_yticks(y, ops)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=3, frameon=False)
    fig.suptitle("Latency percentiles per operation (p50 / p95 / p99)", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97 if nrows > 1 else 0.94))
    return _save(fig, path)


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
    ops = operations_in_order(summary, limit=9)
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
    ops = [op for op in ops if series[op]]
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
    return _save(fig, path)


def render_all(runs: list[Run], summary: pd.DataFrame, ts: pd.DataFrame, out_dir: Path) -> list[tuple[str, str, str]]:
    """[(file name, title, base64 PNG)] for the charts that have data."""
    made = []
    specs = [
        ("throughput_users_errors.png", "Throughput, users and failures over time", lambda p: overview(ts, runs, p)),
        ("latency_over_time.png", "Latency percentiles over time", lambda p: latency_over_time(ts, runs, summary, p)),
        ("percentiles_by_operation.png", "Latency percentiles per operation", lambda p: percentiles_by_operation(summary, runs, p)),
        ("latency_distribution.png", "Latency distribution", lambda p: distribution(runs, summary, p)),
    ]
    for name, title, fn in specs:
        b64 = fn(out_dir / name)
        if b64:
            made.append((name, title, b64))
    return made
