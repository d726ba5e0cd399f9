"""One chldo user per hostile behaviour of tests/hostile_chldo.py, all in one Locust run.

Each user class talks to ``$HOSTILE_CHLDO_URL/<behaviour>`` and reports under its own request type
``h-<behaviour>`` (``connect``, ``sendmsg``), so that one run's CSVs tell the behaviours apart.
Used by tests/test_hostile_chldo.py.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hostile_chldo import BEHAVIOURS  # noqa: E402

from loadkit.users.chldo import ChldoUser  # noqa: E402
from loadkit.users.measure import Measure  # noqa: E402

BASE = os.environ.get("HOSTILE_CHLDO_URL", "ws://127.0.0.1:9")


def _user(name: str) -> type[ChldoUser]:
    def __init__(self: ChldoUser, environment: Any) -> None:
        ChldoUser.__init__(self, environment)
        self.measure = Measure(environment, f"h-{name}")
        self.measure.secrets.append(str(self.api_key))

    return type(f"H_{re.sub(r'[^0-9A-Za-z]', '_', name)}", (ChldoUser,),
                {"__init__": __init__, "host": f"{BASE}/{name}", "fixed_count": 1, "abstract": False})


for _name in BEHAVIOURS:
    _cls = _user(_name)
    globals()[_cls.__name__] = _cls
del _cls, _name  # Locust collects every User class in the module's globals: one name each
