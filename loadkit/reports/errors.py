"""The one error type a report input can raise: it names the file and the problem.

The CLI turns it into a single line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os


class ReportInputError(Exception):
    """An input file is missing, truncated, in the wrong format or holds no data."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
