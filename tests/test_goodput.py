"""``--goodput``: the grammar, the judgement of one request's figures together, merging."""

from __future__ import annotations

import pytest

from loadkit.metrics.goodput import GoodputCounts, GoodputError, console_lines, parse


def test_parse_operations_and_targets():
    specs = parse(["sendmsg: ttft<500ms, sendmsg<5s", "ktb:chatMessage: chatMessage<=200;connect:connect<1.5s"])
    assert set(specs) == {"sendmsg", "chatMessage", "connect"}
    s = specs["sendmsg"]
    assert s.type is None and [(t.figure, t.op, t.limit_ms) for t in s.targets] == [("ttft", "<", 500.0), ("sendmsg", "<", 5000.0)]
    assert not s.own_only and s.text == "ttft<500ms, sendmsg<5s"
    c = specs["chatMessage"]
    assert c.type == "ktb" and c.own_only and c.targets[0].op == "<=" and c.targets[0].limit_ms == 200.0
    assert specs["connect"].targets[0].limit_ms == 1500.0
    assert parse(None) == {} and parse("") == {}


@pytest.mark.parametrize("text, words", [
    ("sendmsg ttft<500ms", "expected"),
    (": ttft<500ms", "expected"),
    ("sendmsg: ttft>500ms", "upper bounds"),
    ("sendmsg: ttft<500%", "upper bounds"),
    ("sendmsg: ttft<500ms,", "target ''"),
    ("sendmsg: ttft<1s; sendmsg: sendmsg<5s", "given twice"),
])
def test_bad_specs_are_one_line(text, words):
    with pytest.raises(GoodputError) as info:
        parse(text)
    assert words in str(info.value) and "\n" not in str(info.value) and str(info.value).startswith("--goodput")


def test_a_request_is_good_only_when_it_succeeded_and_met_every_target():
    g = GoodputCounts()
    g.configure(parse("sendmsg: ttft<500ms, sendmsg<5s"))
    g.judge_phases("chldo", "sendmsg", True, {"sendmsg": 900.0, "ttft": 310.0})  # good
    g.judge_phases("chldo", "sendmsg", True, {"sendmsg": 900.0, "ttft": 500.0})  # ttft not < 500
    g.judge_phases("chldo", "sendmsg", True, {"sendmsg": 5000.0, "ttft": 310.0})  # total not < 5 s
    g.judge_phases("chldo", "sendmsg", True, {"sendmsg": 900.0, "ttft": None})  # no first token
    g.judge_phases("chldo", "sendmsg", False, {"sendmsg": 900.0, "ttft": 310.0})  # failed
    g.judge_phases("chldo", "connect", True, {"connect": 1.0})  # no spec: not counted
    g.on_request("chldo", "sendmsg", 900.0, None)  # phase targets: the listener leaves it to the user
    assert g.counts == {("chldo", "sendmsg"): [1, 5]}
    (row,) = g.rows(10.0)
    assert (row["Requests"], row["Good"], row["Goodput %"], row["Good/s"], row["Requests/s"]) == ("5", "1", "20.00", "0.100", "0.500")
    assert console_lines([row]) == ["chldo sendmsg: 20.00 % good (1 of 5 requests), 0.100 good/s of 0.500/s; "
                                    "targets ttft<500ms, sendmsg<5s"]


def test_own_time_targets_come_from_the_request_event_and_types_are_respected():
    g = GoodputCounts()
    g.configure(parse("ktb:chatMessage: chatMessage<200ms"))
    g.on_request("ktb", "chatMessage", 150.0, None)
    g.on_request("ktb", "chatMessage", 250.0, None)
    g.on_request("ktb", "chatMessage", 150.0, RuntimeError("MessageRejected"))
    g.on_request("other", "chatMessage", 150.0, None)  # another type: not this spec
    g.judge_phases("ktb", "chatMessage", True, {"chatMessage": 1.0})  # own-time spec: the listener's job
    assert g.counts == {("ktb", "chatMessage"): [1, 3]}


def test_worker_deltas_sum_on_the_master():
    spec = parse("chatMessage: chatMessage<200ms")
    workers = [GoodputCounts(), GoodputCounts()]
    master = GoodputCounts()
    master.configure(spec)
    for w, times in zip(workers, ([100.0, 300.0], [50.0, 60.0, 70.0])):
        w.configure(spec)
        for t in times:
            w.on_request("ktb", "chatMessage", t, None)
    master.merge(workers[0].drain())
    master.merge(workers[1].drain())
    master.merge(workers[0].drain())  # drained: nothing twice
    master.merge([["ktb", "chatMessage", "x", 1], "junk"])  # malformed entries are skipped
    assert master.counts == {("ktb", "chatMessage"): [4, 5]}


def test_without_the_option_nothing_listens_and_measure_has_no_recorder():
    from types import SimpleNamespace

    from locust.event import Events

    from loadkit.metrics import slo_gate
    from loadkit.users.measure import Measure

    env = SimpleNamespace(events=Events(), parsed_options=SimpleNamespace(goodput=None), runner=None)
    slo_gate._configure_goodput(env)
    listeners = list(env.events.request._handlers)
    assert slo_gate.GOODPUT.on_request not in listeners
    assert Measure(env, "chldo").goodput is None
    env.parsed_options.goodput = ["chatMessage: chatMessage<200ms"]
    slo_gate._configure_goodput(env)
    assert slo_gate.GOODPUT.on_request in env.events.request._handlers
    assert Measure(env, "ktb").goodput is slo_gate.GOODPUT
    env.events.request.fire(request_type="ktb", name="chatMessage", response_time=10.0, response_length=0,
                            exception=None, context={})
    assert slo_gate.GOODPUT.counts == {("ktb", "chatMessage"): [1, 1]}
    env.parsed_options.goodput = None  # the next run (web UI) without it
    slo_gate._configure_goodput(env)
    assert slo_gate.GOODPUT.on_request not in env.events.request._handlers and slo_gate.goodput_recorder() is None
