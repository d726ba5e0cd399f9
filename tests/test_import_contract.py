"""The layers' import rules (docs/ARCHITECTURE.md, "Import rules"), checked on the source.

Every ``import``/``from ... import`` of a ``loadkit`` module, at any depth in a module (lazy imports
inside functions count too), must be allowed for the importing layer. Third-party rules are checked
for the pure cores: ``loadkit/protocols/`` imports no gevent, socket, websocket or Locust.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "loadkit"

#: layer -> the loadkit packages/modules its modules may import (besides their own layer)
ALLOWED: dict[str, set[str]] = {
    "protocols": set(),
    "clients": {"protocols"},
    "users": {"clients", "protocols", "metrics", "options", "plugin", "redact", "pacing"},
}
#: third-party or stdlib modules a pure core must not import
IMPURE = ("gevent", "socket", "ssl", "select", "selectors", "websocket", "locust", "requests")
#: reviewed exceptions: (module, import) -> why it is no I/O
PURE_ENOUGH = {
    ("loadkit/protocols/ktb.py", "socket"): "socket.timeout recognised in a REST failure's cause; no socket",
    ("loadkit/protocols/ktb_nonce.py", "socket"): "socket.gethostname() names the generator host in ids; no socket",
}


def loadkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # "from loadkit import clients" imports a layer too
            if mod == "loadkit":
                found += [(node.lineno, f"loadkit.{a.name}") for a in node.names]
    return found


def layer_modules(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_the_architecture_allows(layer):
    assert layer_modules(layer), f"no modules under loadkit/{layer}"
    bad = []
    for path in layer_modules(layer):
        for line, mod in loadkit_imports(path):
            parts = mod.split(".")
            if parts[0] != "loadkit" or len(parts) < 2 or parts[1] == layer:
                continue
            if parts[1] not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {mod}")
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def test_pure_cores_import_no_io_clock_or_locust():
    bad = []
    for path in layer_modules("protocols"):
        for line, mod in loadkit_imports(path):
            rel = str(path.relative_to(ROOT.parent))
            if mod.split(".")[0] in IMPURE and (rel, mod) not in PURE_ENOUGH:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {mod}")
    assert not bad, "a pure core imports I/O:\n" + "\n".join(bad)


def test_the_checker_sees_a_broken_rule(tmp_path, monkeypatch):
    """The walk must be able to fail: a lazy import of a higher layer inside a function is found."""
    fake = tmp_path / "loadkit" / "protocols"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("def f():\n    from loadkit.clients import socketio\n    import gevent\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "loadkit")
    found = loadkit_imports(fake / "x.py")
    assert (2, "loadkit.clients") in found and (3, "gevent") in found


def test_no_comment_cites_a_document_outside_the_repository():
    """Facts the code relies on live in docs/ (docs/ktb-servers.md for the KTB servers): no
    ``/work/...`` path, no bare "facts §" of a sheet the reader cannot open, and every
    "docs/ktb-servers.md Java|Node §N" names a section that exists."""
    doc = (ROOT.parent / "docs" / "ktb-servers.md").read_text()
    sections = {(side, major) for side, major in re.findall(r"^### (Java|Node) §(\d+)", doc, re.M)}
    sections |= {(side, str(n)) for side, a, b in re.findall(r"^### (Java|Node) §(\d+)–§(\d+)", doc, re.M)
                 for n in range(int(a), int(b) + 1)}
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT.parent)
        for needle in ("/work/", "facts §", "facts sheet"):
            if needle in text:
                bad.append(f"{rel}: {needle!r}")
        for side, major in re.findall(r"ktb-servers\.md,? (Java|Node) §(\d+)", text):
            if (side, major) not in sections:
                bad.append(f"{rel}: cites {side} §{major}, which docs/ktb-servers.md does not have")
    assert not bad, "\n".join(bad)
