"""Replay streams: followers see every event once, in order; resumption starts after the given event."""

from __future__ import annotations

import anyio

from mcplane_sidecar.core.replay import ReplayStream, parse_event_id


async def collect(stream: ReplayStream, after: int = 0) -> list[tuple[str, dict[str, object]]]:
    return [event async for event in stream.follow(after)]


async def test_follower_gets_live_events_until_close() -> None:
    stream = ReplayStream("p1", capacity=10)
    received: list[tuple[str, dict[str, object]]] = []

    async def follow() -> None:
        received.extend(await collect(stream))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            stream.append({"n": 1})
            stream.append({"n": 2})
            stream.close()
    assert received == [("p1.1", {"n": 1}), ("p1.2", {"n": 2})]


async def test_resume_replays_only_what_came_after() -> None:
    stream = ReplayStream("g", capacity=10)
    for n in range(5):
        stream.append({"n": n})
    stream.close()
    with anyio.fail_after(5):
        events = await collect(stream, after=3)
    assert [message for _, message in events] == [{"n": 3}, {"n": 4}]


async def test_capacity_bounds_memory_and_keeps_the_newest() -> None:
    stream = ReplayStream("p2", capacity=2)
    for n in range(5):
        stream.append({"n": n})
    stream.close()
    with anyio.fail_after(5):
        events = await collect(stream)
    assert events == [("p2.4", {"n": 3}), ("p2.5", {"n": 4})]


def test_event_ids_round_trip_and_garbage_is_refused() -> None:
    assert parse_event_id("p12.7") == ("p12", 7)
    assert parse_event_id("g.0") == ("g", 0)
    assert parse_event_id("nonsense") is None
    assert parse_event_id("p1.x") is None
