"""What needs no hub: merge patches, patterns, URLs, errors, backoff."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

import statecast
from statecast._history import step_param, time_param
from statecast._http import derive_urls


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7396, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7396(target: object, patch: object, expected: object) -> None:
    before = copy.deepcopy(target)
    assert statecast.apply_merge_patch(target, patch) == expected
    assert target == before, "the target is not modified"


def test_match_topic() -> None:
    m = statecast.match_topic
    assert m("micboard/+/battery", "micboard/SHURE001/battery")
    assert not m("micboard/+/battery", "micboard/SHURE001/x/battery")
    assert m("micboard/#", "micboard")
    assert m("micboard/#", "micboard/a/b")
    assert not m("micboard/#", "micboardx")
    assert m("#", "a/b/c")
    assert m("a/b", "a/b")
    assert not m("a/b", "a/b/c")
    assert not m("a/+", "a")


def test_urls_derive_from_each_other() -> None:
    assert derive_urls("http://127.0.0.1:1/") == derive_urls("ws://127.0.0.1:1/ws")
    u = derive_urls("http://127.0.0.1:1/")
    assert (u.ws, u.http) == ("ws://127.0.0.1:1/ws", "http://127.0.0.1:1")
    u = derive_urls("wss://example.invalid/hub/ws")
    assert (u.ws, u.http) == ("wss://example.invalid/hub/ws", "https://example.invalid/hub")
    u = derive_urls("https://example.invalid/hub")
    assert (u.ws, u.http) == ("wss://example.invalid/hub/ws", "https://example.invalid/hub")
    with pytest.raises(ValueError):
        derive_urls("ftp://example.invalid")


def test_errors_are_typed_by_code() -> None:
    from statecast._errors import error_from

    err = error_from({"code": "upstream", "message": "the device answered 409", "status": 409, "body": {"e": 1}})
    assert isinstance(err, statecast.UpstreamError) and isinstance(err, statecast.HubError)
    assert (err.code, err.status, err.body) == ("upstream", 409, {"e": 1})
    assert isinstance(error_from({"code": "invalid_topic", "message": "x"}), statecast.InvalidTopicError)
    assert isinstance(error_from({"code": "timeout", "message": "x"}), statecast.HubTimeoutError)
    odd = error_from({"code": "from_the_future", "message": "x"})
    assert type(odd) is statecast.HubError and odd.code == "from_the_future"
    assert str(odd) == "from_the_future: x"


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    hub = statecast.connect("ws://127.0.0.1:1/ws", backoff_min=0.5, backoff_max=8.0)

    class Top:
        def uniform(self, a: float, b: float) -> float:
            return b

    hub._random = Top()  # type: ignore[assignment]
    assert [hub._backoff(k) for k in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert hub._backoff(10_000) == 8.0
    hub._random.__class__ = type("Bottom", (), {"uniform": lambda self, a, b: a})
    assert hub._backoff(5) == 0.0


def test_change_types() -> None:
    p = statecast.Patch("a/b", 2, {"x": 2}, {"x": 2})
    r = statecast.Removed("a/b", 3)
    e = statecast.Event("a/b", {"pressed": True})
    assert (p.type, r.type, e.type) == ("patch", "removed", "event")
    assert r.state is None and e.rev is None
    match p:
        case statecast.Patch(topic=topic, patch=patch):
            assert (topic, patch) == ("a/b", {"x": 2})
        case _:
            raise AssertionError("no match")


def test_history_times_and_steps_as_the_hub_reads_them() -> None:
    utc = datetime(2026, 12, 6, 21, 0, 0, 120_000, tzinfo=timezone.utc)
    assert time_param(utc) == "2026-12-06T21:00:00.120Z"
    assert time_param(utc.replace(tzinfo=None)) == "2026-12-06T21:00:00.120Z", "naive is UTC"
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    assert time_param(paris) == "2026-12-06T21:00:00.120Z"
    assert time_param(timedelta(hours=1)) == "-3600s"
    assert time_param(-timedelta(seconds=90)) == "-90s"
    assert time_param(timedelta(milliseconds=1500)) == "-1500ms"
    assert time_param(1_796_590_800_120) == "1796590800120"
    assert time_param(1_796_590_800_120.7) == "1796590800120"
    assert time_param("-7d") == "-7d"
    for wrong in (True, None, [1]):
        with pytest.raises(TypeError):
            time_param(wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        time_param(float("nan"))

    assert step_param(timedelta(minutes=1)) == "60s"
    assert step_param(250) == "250ms"
    assert step_param("1m") == "1m"
    for wrong_step in (0, timedelta(0), -5):
        with pytest.raises(ValueError):
            step_param(wrong_step)
    with pytest.raises(TypeError):
        step_param(1.5)  # type: ignore[arg-type]


def test_history_values() -> None:
    change = statecast.HistoryChange(3, datetime(2026, 12, 6, tzinfo=timezone.utc), removed=True)
    assert change.state is None and change.removed
    history = statecast.History([change], "rev:4")
    assert history == [change] and history.next == "rev:4"
    assert statecast.History([]).next is None
    from statecast._errors import error_from

    assert type(error_from({"code": "gone", "message": "older"})) is statecast.GoneError
