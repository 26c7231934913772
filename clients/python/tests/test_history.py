"""The history API, synchronous and async, against the real hub: ``history`` (changes oldest
first, removals, projected fields, times as datetime / timedelta / ms / str, the hub's pages
followed, ``limit`` and its ``next``), ``series`` (points per step), ``state_at`` (the state
as it was), and the errors: bad times and pointers, a time older than the history kept, a
topic the token may not read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import HubProcess, rest

import statecast
from statecast import HistoryChange


def write(base: str, method: str, topic: str, body: object = None) -> None:
    status, answer = rest(base, method, f"/api/state/{topic}", body)
    assert status == 200, answer


def revs(changes: list[HistoryChange]) -> list[int]:
    return [c.rev for c in changes]


def ms(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


async def test_history_lists_every_change_oldest_first_removals_too_and_projected_fields(hub: HubProcess) -> None:
    topic = "hist/mic"
    write(hub.base, "PUT", topic, {"battery": 80, "rf": -60, "name": "SHURE001"})
    write(hub.base, "PATCH", topic, {"battery": 79})
    write(hub.base, "DELETE", topic)
    write(hub.base, "PUT", topic, {"battery": 90})

    changes = statecast.history(topic, url=hub.base)
    assert [(c.rev, c.state, c.removed) for c in changes] == [
        (1, {"battery": 80, "rf": -60, "name": "SHURE001"}, False),
        (2, {"battery": 79, "rf": -60, "name": "SHURE001"}, False),
        (3, None, True),
        (4, {"battery": 90}, False),
    ]
    assert all(c.time.tzinfo is not None and c.time.utcoffset() == timedelta(0) for c in changes)
    assert [c.time for c in changes] == sorted(c.time for c in changes)
    now = datetime.now(timezone.utc)
    assert all(now - timedelta(minutes=1) < c.time <= now + timedelta(seconds=1) for c in changes)
    assert changes.next is None

    async with statecast.connect(hub.ws_url) as c:
        assert await c.history(topic) == changes, "the async client gives the same"
        projected = await c.history(topic, fields=["/battery", "/rf"])
    assert [(c.rev, c.state) for c in projected] == [
        (1, {"/battery": 80, "/rf": -60}),
        (2, {"/battery": 79, "/rf": -60}),
        (3, None),
        (4, {"/battery": 90}),
    ]
    assert statecast.history(topic, fields="/battery,/rf", url=hub.base) == projected
    # A duration before now: a timedelta, or the hub's own form.
    assert revs(statecast.history(topic, from_=timedelta(hours=1), url=hub.base)) == [1, 2, 3, 4]
    assert revs(statecast.history(topic, from_="-1h", url=hub.base)) == [1, 2, 3, 4]


def test_from_and_to_take_datetimes_ms_and_strings_and_bound_the_changes(hub: HubProcess) -> None:
    topic = "hist/bounds"
    for n in range(1, 6):
        write(hub.base, "PUT", topic, {"n": n})
    every = statecast.history(topic, url=hub.base)
    assert len(every) == 5
    t = every[2].time
    # `from_` is inclusive: every change at that time or later is in, none before it.
    since = statecast.history(topic, from_=t, url=hub.base)
    assert since == [c for c in every if c.time >= t]
    assert 3 in revs(since)
    assert statecast.history(topic, from_=ms(t), url=hub.base) == since, "the same as Unix ms"
    rfc3339 = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert statecast.history(topic, from_=rfc3339, url=hub.base) == since, "the same as RFC 3339"
    naive = t.replace(tzinfo=None)
    assert statecast.history(topic, from_=naive, url=hub.base) == since, "a naive datetime is UTC"

    # `to`: none after it, every one before it (whether one at that very time is in, the
    # contract does not say).
    until = statecast.history(topic, to=t, url=hub.base)
    assert all(c.time <= t for c in until)
    assert {c.rev for c in every if c.time < t} <= set(revs(until))


def test_a_long_history_is_read_page_after_page_and_limit_says_where_the_rest_begins(hub: HubProcess) -> None:
    topic = "hist/many"
    n = 1005  # more than the hub's default page of 1000
    for i in range(1, n + 1):
        write(hub.base, "PUT", topic, {"n": i})
    every = statecast.history(topic, url=hub.base)
    assert revs(every) == list(range(1, n + 1))
    assert every[-1].state == {"n": n}
    assert every.next is None

    first = statecast.history(topic, limit=3, url=hub.base)
    assert revs(first) == [1, 2, 3]
    assert isinstance(first.next, str), "a limit before the end gives a next"
    rest_of_it = statecast.history(topic, from_=first.next, url=hub.base)
    assert revs(rest_of_it) == list(range(4, n + 1))
    many = statecast.history(topic, limit=1002, url=hub.base)
    assert len(many) == 1002 and isinstance(many.next, str)


async def test_series_gives_the_points_of_a_numeric_field_per_step(hub: HubProcess) -> None:
    topic = "hist/series"
    for battery in (80, 70, 90):
        write(hub.base, "PUT", topic, {"battery": battery, "name": "x"})
    changes = statecast.history(topic, url=hub.base)
    start, end = changes[0].time, changes[-1].time + timedelta(milliseconds=1)
    points = statecast.series(topic, "/battery", from_=start, to=end, step="1h", url=hub.base)
    assert points, "at least the step of the writes"
    assert all(isinstance(p, statecast.SeriesPoint) and p.t.tzinfo is not None for p in points)
    assert [p.t for p in points] == sorted(p.t for p in points)
    assert sum(p.changes for p in points) == 3
    assert min(p.min for p in points if p.min is not None) == 70
    assert max(p.max for p in points if p.max is not None) == 90
    assert points[-1].last == 90
    last_avg = points[-1].avg
    assert last_avg is not None and 70 <= last_avg <= 90
    # The step as a timedelta or ms, the times as ms: the same points; the async client too.
    assert statecast.series(topic, "/battery", from_=ms(start), to=ms(end), step=3_600_000, url=hub.base) == points
    async with statecast.connect(hub.ws_url) as c:
        assert await c.series(topic, "/battery", from_=start, to=end, step=timedelta(hours=1)) == points


async def test_state_at_gives_the_state_as_it_was(hub: HubProcess) -> None:
    topic = "hist/at"
    write(hub.base, "PUT", topic, {"v": 1})
    write(hub.base, "PUT", topic, {"v": 2})
    write(hub.base, "DELETE", topic)
    write(hub.base, "PUT", topic, {"v": 4})
    changes = statecast.history(topic, url=hub.base)
    async with statecast.connect(hub.ws_url) as c:
        for change in changes:
            # The state at a change's time is that of the last change at or before it.
            last = [x for x in changes if x.time <= change.time][-1]
            for at in (change.time, ms(change.time)):
                if last.removed:
                    with pytest.raises(statecast.NotFoundError):
                        statecast.state_at(topic, at, url=hub.base)
                    continue
                then = statecast.state_at(topic, at, url=hub.base)
                assert then == statecast.TopicState(topic, last.rev, last.state)
                assert then.time == last.time
                assert await c.state_at(topic, at) == then
        assert (await c.state_at(topic, datetime.now(timezone.utc))).state == {"v": 4}
    with pytest.raises(statecast.NotFoundError) as before:
        statecast.state_at(topic, ms(changes[0].time) - 1, url=hub.base)
    assert before.value.http_status == 404
    with pytest.raises(statecast.GoneError) as gone:
        statecast.state_at(topic, timedelta(days=7), url=hub.base)  # older than the 24h kept
    assert (gone.value.code, gone.value.http_status) == ("gone", 410)


def test_bad_times_pointers_and_steps_are_bad_requests(hub: HubProcess) -> None:
    write(hub.base, "PUT", "hist/bad", {"battery": 1})
    calls = [
        lambda: statecast.history("hist/bad", from_="yesterday", url=hub.base),
        lambda: statecast.history("hist/bad", fields=["battery"], url=hub.base),
        lambda: statecast.series("hist/bad", "/battery", step="often", url=hub.base),
        lambda: statecast.state_at("hist/bad", "then", url=hub.base),
    ]
    for call in calls:
        with pytest.raises(statecast.BadRequestError) as refused:
            call()
        assert refused.value.http_status == 400 and refused.value.message
    # What the client itself refuses, before asking.
    with pytest.raises(ValueError):
        statecast.history("hist/bad", limit=0, url=hub.base)
    with pytest.raises(TypeError):
        statecast.state_at("hist/bad", [1], url=hub.base)  # type: ignore[arg-type]


@pytest.fixture
def auth_hub(tmp_path: Path) -> Iterator[HubProcess]:
    config = tmp_path / "statecast.toml"
    config.write_text('[[auth.keys]]\nname = "py-history"\nkey = "s3cret"\nread = ["a/#"]\nwrite = ["a/#", "b/#"]\n')
    process = HubProcess(tmp_path / "data", ["--config", str(config)])
    process.start()
    yield process
    process.stop()


async def test_the_token_is_sent_and_a_topic_it_may_not_read_is_forbidden(auth_hub: HubProcess) -> None:
    statecast.set("a/seen", {"x": 1}, url=auth_hub.base, token="s3cret")
    statecast.set("b/hidden", {"x": 2}, url=auth_hub.base, token="s3cret")  # may write, may not read
    async with statecast.connect(auth_hub.ws_url, token="s3cret") as c:
        assert [x.state for x in await c.history("a/seen")] == [{"x": 1}]
        assert (await c.state_at("a/seen", datetime.now(timezone.utc))).state == {"x": 1}
        for call in (
            c.history("b/hidden"),
            c.series("b/hidden", "/x", step="1m"),
            c.state_at("b/hidden", datetime.now(timezone.utc)),
        ):
            with pytest.raises(statecast.ForbiddenError):
                await asyncio.wait_for(call, 10)
    assert [x.state for x in statecast.history("a/seen", url=auth_hub.base, token="s3cret")] == [{"x": 1}]
    with pytest.raises(statecast.UnauthorizedError):
        statecast.history("a/seen", url=auth_hub.base)
