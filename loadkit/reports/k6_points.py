"""Read k6's per-sample outputs (``--out json`` NDJSON, optionally gzipped, and ``--out csv``).

Only what the report needs is kept, as flat numpy columns: latency samples of time Trends (custom
Trends named like the Locust request names, ``http_req_duration`` per request ``name`` tag,
``ws_connecting``), failures, and the ``vus`` gauge. Parsing is the hot path of big reports, so
NDJSON lines are decoded with orjson after a cheap bytes test, and CSV is read with explicit dtypes.
"""

from __future__ import annotations

import gzip
import io
import os
import urllib.parse
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from orjson import JSONDecodeError, loads  # ~5x faster than json on k6 lines

from .csvutil import read_bytes
from .errors import ReportInputError

#: the counter loadkit's k6 scripts add 1 to (tag ``op``) when an operation fails
FAILURE_COUNTER = "loadkit_failures"
#: k6 built-in time Trends that are sub-timings or bookkeeping, not operations
SKIP_TRENDS = {
    "http_req_blocked",
    "http_req_connecting",
    "http_req_tls_handshaking",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
    "iteration_duration",
    "group_duration",
    "ws_session_duration",
    "ws_ping",
}
#: k6 built-ins that are not Trends (used where the input carries no metric metadata: CSV)
NON_TRENDS = {
    "vus", "vus_max", "iterations", "checks", "data_sent", "data_received", "http_reqs", "http_req_failed",
    "ws_msgs_sent", "ws_msgs_received", "ws_sessions", "dropped_iterations", FAILURE_COUNTER,
    "grpc_streams", "grpc_streams_msgs_sent", "grpc_streams_msgs_received",
}  # fmt: skip
#: metrics whose Point lines are never needed (skipped before JSON decoding)
SKIP_BYTES = sorted(SKIP_TRENDS | {"data_sent", "data_received", "http_reqs", "ws_msgs_sent", "ws_msgs_received", "ws_sessions", "vus_max"})
#: operation names for k6 built-ins that stand for a Locust operation
BUILTIN_OPERATION = {"ws_connecting": "ws_connecting"}


@dataclass
class K6Points:
    """Flat columns of one k6 output file (times are float epoch seconds)."""

    path: str
    sample_t: np.ndarray
    sample_op: pd.Categorical  # operation names
    sample_ms: np.ndarray
    fail_t: np.ndarray
    fail_op: np.ndarray
    fail_kind: np.ndarray  # loadkit_failures `kind` tag, or "HTTP <status>"
    vus_t: np.ndarray
    vus: np.ndarray
    iterations: int = 0
    checks_pass: int = 0
    checks_fail: int = 0
    http_methods: dict = field(default_factory=dict)  # operation -> HTTP method
    t_min: float = float("nan")
    t_max: float = float("nan")
    notes: list = field(default_factory=list)


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip data."""
    raw = read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise ReportInputError(path, "gzip data ends early: file truncated") from None
        except (OSError, zlib.error) as exc:
            raise ReportInputError(path, f"corrupt gzip data ({exc})") from None
    elif str(path).endswith(".gz"):
        raise ReportInputError(path, "named .gz but not gzip data")
    if not raw.strip():
        raise ReportInputError(path, "file is empty")
    return raw


def _iso_to_epoch(times: list) -> np.ndarray:
    """RFC 3339 strings (k6 writes nanoseconds and a zone) -> float epoch seconds."""
    if not times:
        return np.empty(0)
    idx = pd.to_datetime(pd.Index(times), format="ISO8601", utc=True)
    return idx.asi8.astype(np.float64) / 1e9 if idx.unit == "ns" else idx.as_unit("ns").asi8.astype(np.float64) / 1e9


def _finish(path: str, st, sop, sv, ft, fop, vt, vv, it, cp, cf, methods, fkind=None) -> K6Points:
    sample_t = np.asarray(st, dtype=np.float64)
    all_t = [a for a in (sample_t, np.asarray(ft, dtype=np.float64), np.asarray(vt, dtype=np.float64)) if a.size]
    if not sample_t.size:
        raise ReportInputError(path, "empty run: no latency samples (no k6 Trend points with a time value)")
    return K6Points(
        path=path,
        sample_t=sample_t,
        sample_op=pd.Categorical(sop) if not isinstance(sop, pd.Categorical) else sop,
        sample_ms=np.asarray(sv, dtype=np.float64),
        fail_t=np.asarray(ft, dtype=np.float64),
        fail_op=np.asarray(fop, dtype=object),
        fail_kind=np.asarray(fkind if fkind is not None else ["failed"] * len(fop), dtype=object),
        vus_t=np.asarray(vt, dtype=np.float64),
        vus=np.asarray(vv, dtype=np.float64),
        iterations=int(it),
        checks_pass=int(cp),
        checks_fail=int(cf),
        http_methods=methods,
        t_min=float(min(a.min() for a in all_t)),
        t_max=float(max(a.max() for a in all_t)),
    )


def read_ndjson(path: str) -> K6Points:
    """k6 ``--out json=FILE`` (``.gz`` too): ``Metric`` lines describe, ``Point`` lines are samples."""
    raw = _read_bytes(path)
    kinds: dict[str, tuple[str, str]] = {}  # metric -> (type, contains)
    st: list = []
    sop: list = []
    sv: list = []
    ft: list = []
    fop: list = []
    fkind: list = []
    vt: list = []
    vv: list = []
    it = cp = cf = 0
    methods: dict[str, str] = {}
    skip = SKIP_TRENDS
    lines = raw.split(b"\n")
    n_lines = len(lines)
    seen_any = False
    skip_prefixes = tuple(b'{"metric":"' + m.encode() + b'","type":"Point"' for m in SKIP_BYTES)
    for lineno, line in enumerate(lines, start=1):
        if not line or line.isspace():
            continue
        if line.startswith(skip_prefixes):  # k6 >= 0.4x writes "metric" first: skip without parsing
            seen_any = True
            continue
        if b'"Point"' not in line:
            try:
                obj = loads(line)
            except JSONDecodeError:
                raise _bad_line(path, lineno, n_lines, line) from None
            if not isinstance(obj, dict) or obj.get("type") != "Metric":
                raise ReportInputError(path, f"line {lineno}: not a k6 --out json line (no \"type\": \"Metric\"/\"Point\")")
            data = obj.get("data") or {}
            kinds[obj.get("metric") or data.get("name")] = (data.get("type"), data.get("contains"))
            seen_any = True
            continue
        try:
            obj = loads(line)
            metric = obj["metric"]
            data = obj["data"]
            value = data["value"]
            time_s = data["time"]
        except JSONDecodeError:
            raise _bad_line(path, lineno, n_lines, line) from None
        except (KeyError, TypeError):
            raise ReportInputError(path, f"line {lineno}: k6 Point without metric/data.time/data.value") from None
        seen_any = True
        if metric in skip:
            continue
        kind = kinds.get(metric)
        tags = data.get("tags") or {}
        if metric == "vus":
            vt.append(time_s)
            vv.append(value)
        elif metric == FAILURE_COUNTER:
            ft.append(time_s)
            fop.append(tags.get("op") or tags.get("name") or "?")
            kind = tags.get("kind") or "failed"
            fkind.append(f"{kind}: {tags['error']}" if tags.get("error") else kind)
        elif metric == "http_req_failed":
            if value:
                ft.append(time_s)
                fop.append(tags.get("name") or tags.get("url") or "http")
                fkind.append(f"HTTP {tags.get('status') or 'error'}")
        elif metric == "http_req_duration":
            name = tags.get("name") or tags.get("url") or "http"
            st.append(time_s)
            sop.append(name)
            sv.append(value)
            if name not in methods and tags.get("method"):
                methods[name] = tags["method"]
        elif metric == "iterations":
            it += 1
        elif metric == "checks":
            if value:
                cp += 1
            else:
                cf += 1
        elif kind is not None:
            if kind[0] == "trend" and kind[1] == "time":
                st.append(time_s)
                sop.append(BUILTIN_OPERATION.get(metric, metric))
                sv.append(value)
        elif metric not in NON_TRENDS:  # no Metric line seen: a custom metric, assume a time Trend
            st.append(time_s)
            sop.append(BUILTIN_OPERATION.get(metric, metric))
            sv.append(value)
    if not seen_any:
        raise ReportInputError(path, "file is empty")
    # times: convert all at once (the expensive part after JSON)
    try:
        st_s, ft_s, vt_s = _iso_to_epoch(st), _iso_to_epoch(ft), _iso_to_epoch(vt)
    except (ValueError, TypeError) as exc:
        raise ReportInputError(path, f"a data.time is not an RFC 3339 time ({str(exc).splitlines()[0][:100]})") from None
    try:
        sv_f = np.asarray(sv, dtype=np.float64)
    except (ValueError, TypeError):
        raise ReportInputError(path, "a Trend point has a non-numeric data.value") from None
    return _finish(path, st_s, sop, sv_f, ft_s, fop, vt_s, vv, it, cp, cf, methods, fkind)


def _bad_line(path: str, lineno: int, n_lines: int, line: bytes) -> ReportInputError:
    last = lineno >= n_lines - 1
    if lineno == 1 and line.lstrip()[:1] not in (b"{",):
        return ReportInputError(path, "line 1 is not JSON: expected k6 --out json output (NDJSON)")
    if lineno == 1 and line.strip() == b"{":
        return ReportInputError(path, "a pretty-printed JSON document, not k6 --out json NDJSON (use --k6-summary for summary files)")
    return ReportInputError(path, f"line {lineno} is not valid JSON" + (": file truncated?" if last else ""))


_CSV_COLS = ["metric_name", "timestamp", "metric_value"]


def read_csv(path: str) -> K6Points:
    """k6 ``--out csv=FILE`` with any ``timeFormat`` (unix s/ms/µs/ns or RFC 3339)."""
    raw = _read_bytes(path)
    head = raw[:2048].split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    missing = [c for c in _CSV_COLS if c not in head]
    if missing:
        raise ReportInputError(path, f"not a k6 --out csv file: missing column(s) {', '.join(missing)} (header starts: {','.join(head[:4])})")
    use = [c for c in ("metric_name", "timestamp", "metric_value", "error", "method", "name", "status", "url", "extra_tags") if c in head]
    dtypes = {c: str for c in use}
    dtypes["metric_value"] = np.float64
    try:
        df = pd.read_csv(io.BytesIO(raw), usecols=use, dtype=dtypes, keep_default_na=False, na_values={"metric_value": [""]}, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        raise ReportInputError(path, f"unreadable k6 CSV: {str(exc).splitlines()[0]}") from None
    if df.empty:
        raise ReportInputError(path, "no data rows (only a header)")
    bad = df["metric_value"].isna().to_numpy() | (df["timestamp"] == "").to_numpy()
    if bad.any():
        lineno = int(np.argmax(bad)) + 2
        trunc = ": file truncated?" if lineno == len(df) + 1 else ""
        raise ReportInputError(path, f"line {lineno} is incomplete (no timestamp or value){trunc}")
    t = _csv_times(path, df["timestamp"])
    whole_seconds = bool(np.all(t == np.floor(t)))
    metric = df["metric_name"].to_numpy(object)
    value = df["metric_value"].to_numpy(np.float64)
    name = df["name"].to_numpy(object) if "name" in df else np.full(len(df), "", dtype=object)
    extra = df["extra_tags"].to_numpy(object) if "extra_tags" in df else np.full(len(df), "", dtype=object)

    def tag(s: str, key: str, default: str) -> str:
        for kv in s.split("&"):
            if kv.startswith(key + "="):
                return kv[len(key) + 1 :]
        return default

    # classification by metric name (the CSV has no metric metadata)
    uniq = pd.unique(metric)
    trend_like = {}
    for m in uniq:
        if m in SKIP_TRENDS or m in NON_TRENDS:
            trend_like[m] = m == "http_req_duration"
        elif m == "http_req_duration":
            trend_like[m] = True
        else:
            v = value[metric == m]
            trend_like[m] = not np.isin(v, (0.0, 1.0)).all()  # custom counters/rates only add 0/1
    trend_like["http_req_duration"] = True
    is_trend = np.array([trend_like.get(m, False) for m in metric])
    is_http = metric == "http_req_duration"
    sop = np.where(is_http, name, metric)[is_trend]
    sop = np.array([BUILTIN_OPERATION.get(o, o) for o in sop], dtype=object) if "ws_connecting" in trend_like else sop
    methods = {}
    if "method" in df and is_http.any():
        mm = pd.DataFrame({"n": name[is_http], "m": df["method"].to_numpy(object)[is_http]}).drop_duplicates("n")
        methods = dict(zip(mm["n"], mm["m"]))
    is_fc = metric == FAILURE_COUNTER
    is_hf = (metric == "http_req_failed") & (value != 0)
    ft = np.concatenate([t[is_fc], t[is_hf]])
    fop = np.concatenate([np.array([tag(s, "op", "?") for s in extra[is_fc]], dtype=object), name[is_hf]])
    status = df["status"].to_numpy(object) if "status" in df else np.full(len(df), "error", dtype=object)
    def kind_of(s: str, err_col: str) -> str:
        kind, err = tag(s, "kind", "failed"), err_col or urllib.parse.unquote_plus(tag(s, "error", ""))
        return f"{kind}: {err}" if err else kind

    err_col = df["error"].to_numpy(object) if "error" in df else np.full(len(df), "", dtype=object)
    fkind = np.concatenate([np.array([kind_of(s, e) for s, e in zip(extra[is_fc], err_col[is_fc])], dtype=object),
                            np.array([f"HTTP {x or 'error'}" for x in status[is_hf]], dtype=object)])
    is_vus = metric == "vus"
    is_chk = metric == "checks"
    points = _finish(
        path,
        t[is_trend],
        sop,
        value[is_trend],
        ft,
        fop,
        t[is_vus],
        value[is_vus],
        int((metric == "iterations").sum()),
        int((value[is_chk] != 0).sum()),
        int((value[is_chk] == 0).sum()),
        methods,
        fkind,
    )
    if whole_seconds:
        points.notes.append(f"{path}: timestamps are whole seconds (k6 csv timeFormat=unix): duration and rates are approximate")
    return points


def _csv_times(path: str, ts: pd.Series) -> np.ndarray:
    first = str(ts.iloc[0])
    if first.replace(".", "", 1).isdigit():
        try:
            num = ts.astype(np.float64).to_numpy()
        except ValueError:
            raise ReportInputError(path, "column 'timestamp' mixes numbers and text") from None
        mag = np.nanmax(num)
        scale = 1.0 if mag < 1e11 else 1e3 if mag < 1e14 else 1e6 if mag < 1e17 else 1e9
        return num / scale
    try:
        return _iso_to_epoch(ts.tolist())
    except (ValueError, TypeError) as exc:
        raise ReportInputError(path, f"column 'timestamp': not unix time nor RFC 3339 ({str(exc).splitlines()[0][:80]})") from None


def read_points(path: str | os.PathLike, kind: str) -> K6Points:
    """``kind`` is ``json`` or ``csv`` (the option the file was given with)."""
    path = str(path)
    return read_ndjson(path) if kind == "json" else read_csv(path)
