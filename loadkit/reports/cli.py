"""``loadkit report``: Locust and k6 runs in one self-contained HTML file.

Top level stays light (argparse only); pandas/matplotlib are imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
Every input may carry a label: LABEL=PATH (e.g. --locust baseline=runs/a --k6-json k6=run.json.gz).
Unlabelled Locust runs are named after their scenario (PREFIX_run.json) or prefix; k6 files with the same label form one run,
and unlabelled k6 files are one run if there is at most one file of each kind, else one run each.

examples:
  loadkit report --locust runs/ktb --out reports/ktb
  loadkit report --locust locust=runs/ktb --k6-json k6=run.json.gz --title "KTB 50 users" --out reports/cmp
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--locust", action="append", default=[], metavar="[LABEL=]PREFIX",
                        help="a Locust --csv prefix (reads PREFIX_stats.csv, _stats_history.csv, _failures.csv, _exceptions.csv, _hdr.csv, "
                             "_metrics.csv, _workers.json, _counters.csv, _saturation.csv, _run.json)")
    parser.add_argument("--k6-json", action="append", default=[], metavar="[LABEL=]FILE",
                        help="k6 --out json output (NDJSON, .gz allowed)")
    parser.add_argument("--k6-csv", action="append", default=[], metavar="[LABEL=]FILE",
                        help="k6 --out csv output (any time format)")
    parser.add_argument("--k6-summary", action="append", default=[], metavar="[LABEL=]FILE",
                        help="k6 --summary-export JSON or a handleSummary JSON dump")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default: reports/<name>/); gets report.html, PNGs and CSVs")
    parser.add_argument("--title", default=None, help="report title (default: built from the run labels)")
    parser.add_argument("--name", default=None, help="name of the default output directory under reports/")
    parser.add_argument("--bucket", type=float, default=1.0, metavar="SECONDS",
                        help="time-series bucket for k6 samples (default: 1 s, like Locust's history)")
    parser.add_argument("--quiet", action="store_true", help="no console summary")


def run(args: argparse.Namespace) -> int:
    from .errors import ReportInputError

    try:
        from .build import build_report

        result = build_report(args)
    except ReportInputError as exc:
        print(f"loadkit report: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("loadkit report: error: out of memory reading the inputs", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not bad input: still one line, traceback on request
        if os.environ.get("LOADKIT_DEBUG"):
            raise
        print(f"loadkit report: internal error: {type(exc).__name__}: {exc} (set LOADKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3
    if not args.quiet:
        try:
            print(result.console, flush=True)
        except BrokenPipeError:  # `loadkit report … | head`: the report is written, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
