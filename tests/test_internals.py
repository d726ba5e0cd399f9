"""The guards of the other packages' internals loadkit patches or reads (``loadkit.internals``):
each detects its internal gone, in one line naming the package version, and the tested version
ranges in ``pyproject.toml`` are the ones the code states and include what is installed."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from loadkit import internals, plugin
from loadkit.internals import Internal, InternalsMoved
from loadkit.targets.ktb import internals as ktb_internals

ROOT = Path(__file__).resolve().parent.parent


def remove(internal: Internal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``internal`` disappear the way a new release would (restored after the test)."""
    module, _, chain = internal.path.partition(":")
    owner_chain, _, name = chain.rpartition(".")
    owner = internals.resolve(f"{module}:{owner_chain}" if owner_chain else module)
    if internal.how == "self":  # renamed in the class's code
        real = internals._source
        monkeypatch.setattr(internals, "_source",
                            lambda cls: re.sub(rf"\bself\.{name}\b", f"self.{name}_renamed", real(cls)))
        return
    if internal.how == "own" or not isinstance(owner, type):
        monkeypatch.delattr(owner, name)
        return
    defined = [cls for cls in owner.__mro__ if name in vars(cls)]  # inherited: gone wherever defined
    assert defined, f"{internal.path} not found to remove"
    for cls in defined:
        monkeypatch.delattr(cls, name)


def one_line(exc: pytest.ExceptionInfo[InternalsMoved]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.startswith("loadkit: ")
    return text


def test_everything_is_there_in_the_installed_versions() -> None:
    assert internals.missing(plugin.LOCUST_INTERNALS) == []
    for dist, table in ktb_internals.INTERNALS.items():
        assert internals.missing(table) == [], dist
    plugin.check_locust()
    ktb_internals.check_all()


@pytest.mark.parametrize("internal", plugin.LOCUST_INTERNALS, ids=lambda i: i.path)
def test_each_locust_guard_detects_its_internal_gone(internal: Internal, monkeypatch: pytest.MonkeyPatch) -> None:
    remove(internal, monkeypatch)
    with pytest.raises(InternalsMoved) as ei:
        plugin.check_locust()
    text = one_line(ei)
    assert f"locust {internals.version('locust')} " in text
    assert internal.path.replace(":", ".") in text and internal.why in text
    assert f"locust{plugin.LOCUST_TESTED}" in text
    assert ei.value.code == text  # SystemExit: the message is what the process prints, status 1


@pytest.mark.parametrize("internal", [(d, i) for d, t in ktb_internals.INTERNALS.items() for i in t],
                         ids=lambda di: di[1].path)
def test_each_ktb_server_guard_detects_its_internal_gone(internal: tuple[str, Internal],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    dist, i = internal
    remove(i, monkeypatch)
    with pytest.raises(InternalsMoved) as ei:
        ktb_internals.check_all()
    text = one_line(ei)
    assert f"{dist} {internals.version(dist)} " in text and i.path.replace(":", ".") in text


def test_wrap_patches_once_and_refuses_a_method_that_is_not_the_classs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    class Base:
        def run(self) -> str:
            return "base"

    class Child(Base):
        def run(self) -> str:
            return "child"

    mod = type(sys)("fake_mod_for_wrap")
    mod.Child = Child  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_mod_for_wrap", mod)
    assert internals.wrap("fake_mod_for_wrap:Child.run", lambda orig: lambda self: "wrapped " + orig(self))
    assert not internals.wrap("fake_mod_for_wrap:Child.run", lambda orig: lambda self: "twice")
    assert Child().run() == "wrapped child" and Base().run() == "base"
    monkeypatch.delattr(Child, "run")  # a release that moved it up into the base class
    with pytest.raises(InternalsMoved, match="has no fake_mod_for_wrap.Child.run to patch"):
        internals.wrap("fake_mod_for_wrap:Child.run", lambda orig: orig)
    assert Base().run() == "base"  # the parent was not touched


def test_version_ranges() -> None:
    assert internals.in_range("2.47.0", ">=2.40,<2.48")
    assert not internals.in_range("2.48.0", ">=2.40,<2.48")
    assert not internals.in_range("2.39.9", ">=2.40,<2.48")
    assert internals.in_range("0.10.1", ">=0.10.1,<0.11")
    with pytest.raises(ValueError):
        internals.in_range("1.0", "~=1.0")


def test_pyproject_bounds_are_the_tested_ranges_and_hold_the_installed_versions() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = dict(re.fullmatch(r"([A-Za-z0-9_-]+)(.*)", d).groups() for d in deps)  # type: ignore[union-attr]
    tested = {"locust": plugin.LOCUST_TESTED, **ktb_internals.TESTED}
    for dist, spec in tested.items():
        assert ranges[dist] == spec, f"pyproject says {dist}{ranges[dist]}, the code {dist}{spec}"
        assert "<" in spec, f"{dist}: no upper bound"
        assert internals.in_range(internals.version(dist), spec), f"installed {dist} is outside {spec}"


@pytest.mark.slow
def test_a_locustfile_under_a_locust_that_moved_an_internal_exits_with_one_line() -> None:
    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import locust.runners as r\n"
            "del r.MasterRunner.quit\n"  # the release moved it: only Runner.quit is left
            "import loadkit.users.socketio\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"loadkit: locust {internals.version('locust')} lacks")
    assert "locust.runners.MasterRunner.quit (waiting for the workers' final reports)" in lines[0]
