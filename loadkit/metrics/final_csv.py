"""Make Locust's ``--csv`` files final.

Why: Locust rewrites ``<prefix>_stats.csv``, ``_failures.csv`` and ``_exceptions.csv`` once a second
from a background greenlet and only *closes* them at exit, so whatever happened in the last second
of a run (often the final reports of every worker) never reaches them, and their counts fall short
of what Locust printed and of loadkit's ``_hdr.csv``. Closing the files is the one moment that
always comes after the last sample, so this rewrites the three snapshot files there, once, with
Locust's own row writers, and appends one last history row. The patch of ``close_files`` that calls
:func:`final_write` is in ``loadkit.plugin`` (every Locust patch is, with its guard).
"""

from __future__ import annotations

import time


def _rewrite(handle, writer, header, write_rows) -> None:
    handle.seek(0)
    writer.writerow(header)
    write_rows(writer)
    handle.truncate()


def final_write(csv_writer) -> None:
    """Rewrite the snapshot CSVs of a ``locust.stats.StatsCSVFileWriter`` from the current stats."""
    _rewrite(csv_writer.requests_csv_filehandle, csv_writer.requests_csv_writer,
             csv_writer.requests_csv_columns, csv_writer._requests_data_rows)
    _rewrite(csv_writer.failures_csv_filehandle, csv_writer.failures_csv_writer,
             csv_writer.failures_columns, csv_writer._failures_data_rows)
    _rewrite(csv_writer.exceptions_csv_filehandle, csv_writer.exceptions_csv_writer,
             csv_writer.exceptions_columns, csv_writer._exceptions_data_rows)
    csv_writer._stats_history_data_rows(csv_writer.stats_history_csv_writer, time.time())
