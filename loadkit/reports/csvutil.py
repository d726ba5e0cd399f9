"""Strict CSV reading shared by the Locust readers: explicit dtypes, clear errors naming the file.

pandas' own messages ("could not convert string to float") say neither which file nor which line;
these helpers re-read the offending column to point at the line, so a user can open the file there.
"""

from __future__ import annotations

import csv
import io
import os
import re

import numpy as np
import pandas as pd

from .errors import ReportInputError

PERCENTILE_COLUMN = re.compile(r"^\d+(\.\d+)?%$")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file; a missing or unreadable file is an input error naming it."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ReportInputError(path, "file not found") from None
    except IsADirectoryError:
        raise ReportInputError(path, "is a directory, expected a file") from None
    except OSError as exc:
        raise ReportInputError(path, f"cannot read: {exc.strerror or exc}") from None


def read_text(path: str | os.PathLike) -> str:
    """The whole file as text; missing, unreadable, binary or empty files are input errors."""
    raw = read_bytes(path)
    if not raw.strip():
        raise ReportInputError(path, "file is empty")
    if b"\x00" in raw[:4096]:
        raise ReportInputError(path, "binary data, expected a CSV text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportInputError(path, f"not UTF-8 text (byte {exc.start})") from None


def header_of(path: str | os.PathLike, text: str) -> list[str]:
    first = text.split("\n", 1)[0].rstrip("\r")
    try:
        return next(csv.reader([first]))
    except (csv.Error, StopIteration):
        raise ReportInputError(path, "line 1: unreadable CSV header") from None


def require_columns(path, header: list[str], needed: list[str], what: str) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        shown = ", ".join(header[:6]) + (" …" if len(header) > 6 else "")
        raise ReportInputError(
            path, f"not a {what}: missing column(s) {', '.join(missing)} (header is: {shown})"
        )


def checked_rows(path: str, needed: list[str], what: str):
    """``(line number, {column: text})`` of each non-empty data row of the CSV at ``path``, after
    checking that the header has the ``needed`` columns and every row as many fields as the header
    (a short row says the file was truncated)."""
    text = read_text(path)
    header = header_of(path, text)
    require_columns(path, header, needed, what)
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    for lineno, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise ReportInputError(path, f"line {lineno} has {len(fields)} fields, the header has {len(header)}"
                                   + (": file truncated?" if len(fields) < len(header) else ""))  # fmt: skip
        yield lineno, dict(zip(header, fields))


def read_typed(
    path,
    text: str,
    header: list[str],
    str_cols: list[str],
    na_values: tuple[str, ...] = ("N/A",),
    check_last: bool = True,
) -> pd.DataFrame:
    """Read ``text`` with every column float64 except ``str_cols``; point at bad lines on failure."""
    dtypes = {c: (str if c in str_cols else np.float64) for c in header}
    na = {c: list(na_values) for c in header if c not in str_cols}
    try:
        df = pd.read_csv(
            io.StringIO(text), dtype=dtypes, keep_default_na=False, na_values=na, engine="c"
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise ReportInputError(path, _locate_problem(text, header, str_cols, na_values) or f"unreadable CSV: {exc}") from None
    if df.empty:
        raise ReportInputError(path, "no data rows (only a header)")
    n_fields = len(header)
    # a short last row is what a killed writer leaves behind: pandas fills it with NaN silently
    last_line = text.rstrip("\r\n").rsplit("\n", 1)[-1]
    try:
        last_fields = next(csv.reader([last_line]))
    except csv.Error:
        last_fields = []
    if check_last and len(last_fields) < n_fields and not text.rstrip("\r\n").endswith('"'):
        raise ReportInputError(
            path, f"line {text.rstrip(chr(10)).count(chr(10)) + 1} has {len(last_fields)} of {n_fields} fields: file truncated?"
        )
    return df


def _locate_problem(text: str, header: list[str], str_cols, na_values) -> str | None:
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    for lineno, row in enumerate(reader, start=2):
        if len(row) != len(header):
            if not row:
                continue
            return f"line {lineno} has {len(row)} fields, the header has {len(header)}" + (
                ": file truncated?" if len(row) < len(header) else ""
            )
        for name, value in zip(header, row):
            if name in str_cols or value in na_values:
                continue
            try:
                float(value)
            except ValueError:
                return f"line {lineno}, column {name!r}: {value!r} is not a number"
    return None


def incomplete_rows(path, df: pd.DataFrame, cols: list[str]) -> None:
    """Required numeric columns must be filled on every row (a short row means a truncated file)."""
    bad = df[cols].isna().any(axis=1).to_numpy()
    if bad.any():
        lineno = int(np.argmax(bad)) + 2
        raise ReportInputError(path, f"line {lineno} is incomplete (empty {', '.join(c for c in cols if pd.isna(df.iloc[lineno - 2][c]))}): file truncated?")


def unique_keys(path, df: pd.DataFrame, cols: list[str]) -> None:
    """Each row's ``cols`` must be its own: a writer keeps one row per key (Locust one per (Type, Name),
    loadkit's master one per histogram), so a repeated key means a broken or hand-joined file, and
    reading on would pick one of the two rows silently or fail later as an internal error."""
    keys = df[cols].fillna("")
    dup = keys.duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.argmax(dup))
        key = tuple(keys[c].iloc[first] for c in cols)
        same = np.flatnonzero((keys == pd.Series(key, index=cols)).all(axis=1).to_numpy())
        lines = " and ".join(str(int(i) + 2) for i in same[:2])
        shown = ", ".join(f"{c} {v!r}" for c, v in zip(cols, key))
        raise ReportInputError(path, f"lines {lines} both hold {shown}: expected one row per ({', '.join(cols)});"
                               " two files joined, or not written by Locust/loadkit?")
