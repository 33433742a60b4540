"""The runtime against an in-memory fake of the worker routes: bodies, streaming order,
progress, concurrency, stops, shutdown, retries. Each test is bounded by asyncio timeouts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from neuroq import demo_handlers
from neuroq.worker import WorkerAuthError, progress_update, stop_requested

pytestmark = pytest.mark.timeout(30)


async def run(worker: Any, timeout_s: float = 10.0) -> None:
    await asyncio.wait_for(worker.run(), timeout_s)


async def test_sync_handler_result_is_posted(fake: Any, make_worker: Any) -> None:
    fake.add("j1", {"x": 1})
    worker = make_worker(demo_handlers.echo)
    await run(worker)
    [done] = fake.finals("j1")
    assert done.body == {"output": {"x": 1}}
    assert done.params["isStream"] == "false"
    assert done.headers["authorization"] == "wkey"
    assert worker.counts["completed"] == 1


async def test_async_handler_and_return_forms(fake: Any, make_worker: Any) -> None:
    async def h(job: dict[str, Any]) -> Any:
        return job["input"]["ret"]

    for i, ret in enumerate([None, {"error": "bad", "a": 1}, {}, {"refresh_worker": True}]):
        fake.add(f"j{i}", {"ret": ret})
    await run(make_worker(h))
    assert fake.finals("j0")[0].body == {"output": None}
    assert fake.finals("j1")[0].body == {"output": {"a": 1}, "error": "bad"}
    assert fake.finals("j2")[0].body == {}
    assert fake.finals("j3")[0].body == {"stopPod": True}


async def test_exception_fails_with_type_and_message(fake: Any, make_worker: Any) -> None:
    fake.add("j1", {"message": "no GPU"})
    worker = make_worker(demo_handlers.fail)
    await run(worker)
    [done] = fake.finals("j1")
    assert json.loads(done.body["error"]) == {
        "error_type": "<class 'RuntimeError'>",
        "error_message": "no GPU",
    }
    assert worker.counts["failed"] == 1


async def test_unencodable_output_fails_saying_so(fake: Any, make_worker: Any) -> None:
    fake.add("j1")
    fake.add("j2")

    def h(job: dict[str, Any]) -> Any:
        return {1, 2} if job["id"] == "j1" else float("inf")

    await run(make_worker(h))
    assert "not JSON-encodable" in fake.finals("j1")[0].body["error"]
    assert "not JSON-encodable" in fake.finals("j2")[0].body["error"]


@pytest.mark.parametrize("aggregate", [True, False])
async def test_async_generator_streams_in_order(
    fake: Any, make_worker: Any, aggregate: bool
) -> None:
    fake.add("j1", {"count": 5})
    await run(make_worker(demo_handlers.stream, aggregate=aggregate))
    chunks = [c.body for c in fake.of("stream", "j1")]
    assert chunks == [{"output": {"i": i}} for i in range(5)]
    assert all(c.params["isStream"] == "false" for c in fake.of("stream", "j1"))
    [done] = fake.finals("j1")
    assert done.params["isStream"] == "true"
    assert done.body == {"output": [{"i": i} for i in range(5)] if aggregate else []}


async def test_sync_generator_runs_in_one_thread_and_streams(fake: Any, make_worker: Any) -> None:
    threads: set[int] = set()

    def h(job: dict[str, Any]) -> Iterator[int]:
        for i in range(100):  # more than the hand-off buffer, so backpressure is exercised
            threads.add(threading.get_ident())
            yield i

    fake.add("j1")
    await run(make_worker(h, aggregate=True))
    assert [c.body["output"] for c in fake.of("stream", "j1")] == list(range(100))
    assert fake.finals("j1")[0].body == {"output": list(range(100))}
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_generator_error_chunk_and_exception(fake: Any, make_worker: Any) -> None:
    async def h(job: dict[str, Any]) -> AsyncIterator[Any]:
        yield 1
        if job["id"] == "j1":
            yield {"error": "model exploded"}
            yield 2  # never reached
        raise ValueError("broken generator")

    fake.add("j1")
    fake.add("j2")
    await run(make_worker(h))
    assert [c.body for c in fake.of("stream", "j1")] == [{"output": 1}]
    [d1] = fake.finals("j1")
    assert d1.body == {"error": "model exploded"} and d1.params["isStream"] == "true"
    [d2] = fake.finals("j2")
    assert json.loads(d2.body["error"])["error_message"] == "broken generator"


async def test_progress_is_posted_in_order_before_the_result(fake: Any, make_worker: Any) -> None:
    def h(job: dict[str, Any]) -> str:
        for i in range(5):
            progress_update(job, {"step": i})
        return "done"

    fake.add("j1")
    await run(make_worker(h))
    bodies = [c.body for c in fake.of("done", "j1")]
    assert bodies == [{"status": "IN_PROGRESS", "output": {"step": i}} for i in range(5)] + [
        {"output": "done"}
    ]
    assert all(c.params["isStream"] == "false" for c in fake.of("done", "j1"))


async def test_progress_update_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="job dict"):
        progress_update({"input": 1}, 1)
    with pytest.raises(TypeError):
        progress_update({"id": "x"}, object())
    progress_update({"id": "not-running"}, 1)  # outside a worker: ignored


async def test_concurrency_overlaps_async_jobs_with_batch_take(fake: Any, make_worker: Any) -> None:
    running, peak = 0, 0
    all_in = asyncio.Event()

    async def h(job: dict[str, Any]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)  # returns only once all four run at once
        running -= 1

    for i in range(4):
        fake.add(f"j{i}")
    await run(make_worker(h, concurrency=4))
    assert peak == 4
    assert all(fake.finals(f"j{i}")[0].body == {"output": None} for i in range(4))
    first = fake.of("take")[0]
    # a burst worker (make_worker's default) holds its takes briefly
    assert first.params == {"batch_size": "4", "job_in_progress": "0", "wait": "1000"}


async def test_sync_handlers_overlap_in_threads(fake: Any, make_worker: Any) -> None:
    barrier = threading.Barrier(3, timeout=5)

    def h(job: dict[str, Any]) -> int:
        return barrier.wait()  # raises BrokenBarrierError unless three run at once

    for i in range(3):
        fake.add(f"j{i}")
    await run(make_worker(h, concurrency=3))
    outputs = sorted(fake.finals(f"j{i}")[0].body["output"] for i in range(3))
    assert outputs == [0, 1, 2]


async def test_a_full_worker_never_fetches(fake: Any, make_worker: Any) -> None:
    for i in range(3):
        fake.add(f"j{i}", {"seconds": 0.1})
    await run(make_worker(demo_handlers.sleep, concurrency=1))
    takes = fake.of("take")
    # Every take happened with no job held, and none used the batch form.
    assert all(t.params == {"job_in_progress": "0", "wait": "1000"} for t in takes), takes
    assert [c.job_id for c in fake.calls if c.kind == "done"] == ["j0", "j1", "j2"]


async def test_heartbeat_names_held_jobs(fake: Any, make_worker: Any) -> None:
    fake.add("j1", {"seconds": 0.4})
    await run(make_worker(demo_handlers.sleep))
    ids = [c.params.get("job_id") for c in fake.of("ping")]
    assert "j1" in ids


async def test_stop_cancels_async_handler_and_worker_goes_on(
    fake: Any, make_worker: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    fake.add("j1", {"seconds": 30, "marker": str(marker)})
    worker = make_worker(demo_handlers.sleep, burst=False)
    task = asyncio.create_task(worker.run())
    await fake.wait_for(lambda: "j1" in worker.held_ids())
    fake.stop("j1")
    await fake.wait_for(marker.exists)
    assert marker.read_text() == "cancelled"
    fake.add("j2", {"seconds": 0})
    await fake.wait_for(lambda: bool(fake.finals("j2")))
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert fake.of("done", "j1") == []
    assert worker.counts == {"completed": 1, "failed": 0, "stopped": 1, "abandoned": 0}


async def test_stop_of_sync_handler_drops_late_result(fake: Any, make_worker: Any) -> None:
    release = threading.Event()
    seen_stop: list[bool] = []

    def h(job: dict[str, Any]) -> str:
        release.wait(10)
        seen_stop.append(stop_requested(job))
        return "late"

    fake.add("j1")
    worker = make_worker(h, burst=False)
    task = asyncio.create_task(worker.run())
    await fake.wait_for(lambda: "j1" in worker.held_ids())
    fake.stop("j1")
    await fake.wait_for(lambda: worker.held_ids() == [])  # pings stop naming it at once
    release.set()
    await fake.wait_for(lambda: worker.counts["stopped"] == 1)
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert seen_stop == [True]
    assert fake.of("done", "j1") == []


async def test_stop_of_sync_generator_ends_it(fake: Any, make_worker: Any) -> None:
    closed = threading.Event()

    def h(job: dict[str, Any]) -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            closed.set()

    fake.add("j1")
    worker = make_worker(h, burst=False)
    task = asyncio.create_task(worker.run())
    await fake.wait_for(lambda: len(fake.of("stream", "j1")) >= 3)
    fake.stop("j1")
    await fake.wait_for(closed.is_set)
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert fake.of("done", "j1") == []


async def test_shutdown_lets_in_flight_job_finish(fake: Any, make_worker: Any) -> None:
    fake.add("j1", {"seconds": 0.3})
    fake.add("j2", {"seconds": 0.3})
    worker = make_worker(demo_handlers.sleep, burst=False)
    task = asyncio.create_task(worker.run())
    await fake.wait_for(lambda: "j1" in worker.held_ids())
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert fake.finals("j1")[0].body["output"]["slept"] == 0.3
    assert fake.of("done", "j2") == []  # not taken after the shutdown request
    assert fake.queue == [{"id": "j2", "input": {"seconds": 0.3}}]


async def test_shutdown_abandons_after_grace(fake: Any, make_worker: Any) -> None:
    fake.add("j1", {"seconds": 30})
    worker = make_worker(demo_handlers.sleep, burst=False, grace_s=0.2)
    task = asyncio.create_task(worker.run())
    await fake.wait_for(lambda: "j1" in worker.held_ids())
    started = time.monotonic()
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2
    assert fake.of("done", "j1") == []
    assert worker.counts["abandoned"] == 1


async def test_retries_5xx_and_429_without_losing_results(fake: Any, make_worker: Any) -> None:
    fake.faults = {"take": [503, 429], "done": [502, 500], "stream": [503]}
    fake.add("j1", {"count": 2})
    await run(make_worker(demo_handlers.stream, aggregate=True))
    assert [c.body for c in fake.of("stream", "j1")][-2:] == [
        {"output": {"i": 0}},
        {"output": {"i": 1}},
    ]
    finals = fake.finals("j1")
    assert len(finals) == 3  # two faults, then the one that counted
    assert finals[-1].body == {"output": [{"i": 0}, {"i": 1}]}


async def test_retry_after_as_an_http_date_is_honoured(fake: Any, make_worker: Any) -> None:
    """RFC 9110 allows Retry-After as delay-seconds or an HTTP-date. The worker used to read
    only seconds and fell back to its own (here 10-50 ms) backoff on a date."""
    # HTTP-dates have whole seconds, so "2 s ahead" means a wait of more than 1 s.
    fake.fault_retry_after = formatdate(time.time() + 2, usegmt=True)
    fake.faults = {"done": [503]}
    fake.add("j1", {"x": 1})
    await run(make_worker(demo_handlers.echo))
    first, second = fake.finals("j1")
    assert second.at - first.at > 0.9


async def test_refused_key_stops_the_worker(fake: Any, make_worker: Any) -> None:
    fake.faults = {"take": [401]}
    with pytest.raises(WorkerAuthError, match="refused the worker key"):
        await run(make_worker(demo_handlers.echo))


async def test_no_hot_loop_when_server_answers_empty_at_once(fake: Any, make_worker: Any) -> None:
    fake.hold_s = 0
    worker = make_worker(demo_handlers.echo, burst=False, min_poll_interval_s=0.2)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)  # measuring a rate over a fixed window is the point here
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert len(fake.of("take")) <= 7
    assert len(fake.of("stop")) <= 7


async def test_second_shutdown_request_skips_the_grace_period(fake: Any, make_worker: Any) -> None:
    fake.add("j1", {"seconds": 30})
    worker = make_worker(demo_handlers.sleep, burst=False, grace_s=30)
    task = asyncio.create_task(worker.run())
    await fake.wait_for(lambda: "j1" in worker.held_ids())
    worker.request_shutdown()
    await asyncio.sleep(0.1)  # still waiting for the job: the grace period is 30 s
    assert not task.done()
    worker.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert worker.counts["abandoned"] == 1


async def batch_while_first_post_hangs(fake: Any, make_worker: Any, queued: bool = False) -> Any:
    """Six jobs at concurrency 6 (b0..b5, unless `queued` says they are in the queue already):
    the first result's job-done is held until every other job has finished, so those five
    results wait behind it."""
    for i in range(0 if queued else 6):
        fake.add(f"b{i}", {"i": i})
    finished = 0

    async def h(job: dict[str, Any]) -> Any:
        nonlocal finished
        await asyncio.sleep(0.01 * int(job["input"]["i"]))  # b0 ends first
        finished += 1
        if finished == 6:
            fake.done_gate.set()
        return job["input"]["i"]

    fake.done_gate.clear()
    worker = make_worker(h, concurrency=6)
    await run(worker)
    for i in range(6):
        [done] = fake.finals(f"b{i}")
        assert done.body == {"output": i}
    assert worker.counts["completed"] == 6
    return worker


async def test_results_that_wait_for_a_post_go_together_in_one_batch(
    fake: Any, make_worker: Any
) -> None:
    await batch_while_first_post_hangs(fake, make_worker)
    assert [c.job_id for c in fake.of("done") if c.job_id == "b0"] == ["b0"]
    [batch] = fake.of("done-batch")
    assert sorted(item["id"] for item in batch.body) == [f"b{i}" for i in range(1, 6)]


async def test_without_the_batch_route_results_are_posted_one_by_one(
    fake: Any, make_worker: Any
) -> None:
    fake.batch_supported = False
    worker = await batch_while_first_post_hangs(fake, make_worker)
    assert len(fake.of("done-batch")) == 1  # tried once, then never again
    assert not worker.transport._batching


async def test_every_post_names_the_attempt_the_job_object_named(
    fake: Any, make_worker: Any
) -> None:
    """The server fences posts by attempt as well as by worker id: a late post from an earlier
    attempt of the same job, taken again by this same worker id, must not count."""
    fake.queue.append({"id": "a1", "input": {"count": 2}, "attempt": 3})
    fake.changed.set()
    await run(make_worker(demo_handlers.stream))
    posts = fake.of("stream", "a1") + fake.of("done", "a1")
    assert len(posts) == 3
    assert all(c.params.get("attempt") == "3" for c in posts), [c.params for c in posts]


async def test_batched_results_carry_their_attempt(fake: Any, make_worker: Any) -> None:
    for i in range(6):
        fake.queue.append({"id": f"b{i}", "input": {"i": i}, "attempt": i})
    await batch_while_first_post_hangs(fake, make_worker, queued=True)
    [batch] = fake.of("done-batch")
    assert {item["id"]: item["attempt"] for item in batch.body} == {f"b{i}": i for i in range(1, 6)}
