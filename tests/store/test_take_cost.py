"""The cost of a worker's hot path must not grow with the finished jobs a server retains.

A user measured one worker draining 2,000 queued jobs from PostgreSQL ever slower as the
table grew (158 jobs/s next to ~4,300 retained jobs, 26 jobs/s next to ~8,000). These tests
run what a draining worker makes the server run (take, finish, heartbeats, the stop poll) and
what the background loops run meanwhile (the scaler's queue_stats, the sweeps) on a real
`PostgresStore`, once next to 100 retained jobs and once next to 10,000, and read the plan
PostgreSQL actually executed for every statement from `auto_explain`: custom plans first, then
the generic plans psycopg's prepared statements get after five runs. Two structural checks, no
timing:

- no statement reads the jobs table from end to end (a `Seq Scan` on jobs);
- no statement reads more buffers per row next to 10,000 retained jobs than next to 100, give
  or take a deeper index level.

The retained jobs are vacuumed, as autovacuum leaves them: dead row versions not yet vacuumed
are a different cost (every index scan steps over them), see docs/store.md.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from store_backends import POSTGRES_URL, drop_schema

from neuroq.jobs import now_ms
from neuroq.store.base import Holder
from neuroq.store.postgres import PostgresStore
from neuroq.store.sql import load_queries

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="set NEUROQ_TEST_POSTGRES_URL to run the PostgreSQL tests"
)
EP = "ep-cost"
QUEUED = 300
WORKER = "w-cost"
LEASE_MS = 60_000

#: every statement's plan goes to the client as a NOTICE, with its buffer counts
AUTO_EXPLAIN = (
    "-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0"
    " -c auto_explain.log_analyze=on -c auto_explain.log_buffers=on"
    " -c auto_explain.log_timing=off -c auto_explain.log_format=json"
    " -c auto_explain.log_level=notice"
)
#: what a worker's requests run, once per job or per take: these must cost the same whatever
#: the table holds
HOT_PATH = {
    "take",
    "finish",
    "let_go",
    "touch_worker",
    "renew_held",
    "let_go_unlisted",
    "worker_get",
    "worker_held",
    "jobs_to_stop",
}
#: what the background loops run every half second or so, whatever the queue holds
PERIODIC = {
    "queue_stats",
    "sweep_queue_ttl",
    "sweep_run_timeout",
    "sweep_workers",
    "sweep_requeue",
    "sweep_lost_fail",
    "sweep_expired",
}
#: next to 10,000 retained jobs a statement may read this much more per row it returns (its
#: indexes are a level deeper) plus SLACK_BUFFERS; anything that grows with the table is far above
GROWTH = 1.5
SLACK_BUFFERS = 4

_PLACEHOLDER = re.compile(r"%\(\w+\)s|\$\d+")
_SPACE = re.compile(r"\s+")


def _shape(sql: str) -> str:
    return _SPACE.sub(" ", _PLACEHOLDER.sub("?", sql)).strip()


_NAMES = {_shape(sql): name for name, sql in load_queries("postgres").items()}


class ExplainedStore(PostgresStore):
    """A PostgresStore whose connections report the plan of each statement they run."""

    def __init__(self, url: str, *, schema: str) -> None:
        super().__init__(url, schema=schema)
        #: (query name, the executed plan) in the order run
        self.plans: list[tuple[str, dict[str, Any]]] = []

    async def _remember_backend(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await super()._remember_backend(conn)
        conn.add_notice_handler(self._on_notice)

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if "plan:" not in message:
            return
        explained = json.loads(message[message.index("{") :])
        name = _NAMES.get(_shape(explained["Query Text"]))
        if name is not None:
            self.plans.append((name, explained["Plan"]))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


def _per_row(plans: list[dict[str, Any]]) -> float:
    """Mean buffers a statement read per row it returned (or changed), at least one."""
    return sum(_buffers(p) / max(1, int(p.get("Actual Rows", 0))) for p in plans) / len(plans)


async def _fill(schema: str, retained: int, t: int, vacuum: bool) -> None:
    """`retained` finished jobs as a drain leaves them (each queued, run, then completed: the
    dead row versions included, no VACUUM since), then QUEUED jobs waiting."""
    columns = (
        "id, endpoint_id, status, input_json, execution_timeout_ms, ttl_ms, low_priority, sync,"
        " created_at_ms, ttl_deadline_ms"
    )
    queued = (
        "SELECT %s || g, %s, 'IN_QUEUE', '{}', 600000, 86400000, FALSE, FALSE, %s,"
        " %s + 86400000 FROM generate_series(1, %s) AS g"
    )
    async with await psycopg.AsyncConnection.connect(
        POSTGRES_URL, options=f"-c search_path={schema}", autocommit=True
    ) as conn:
        await conn.execute(f"INSERT INTO jobs ({columns}) {queued}", ("old-", EP, t, t, retained))
        await conn.execute(
            "UPDATE jobs SET status = 'IN_PROGRESS', worker_id = 'w-old', started_at_ms = %s,"
            " lease_expires_at_ms = %s",
            (t, t + LEASE_MS),
        )
        await conn.execute(
            "UPDATE jobs SET status = 'COMPLETED', output_json = '{}', finished_at_ms = %s,"
            " lease_expires_at_ms = NULL, expires_at_ms = %s",
            (t, t + 3_600_000),
        )
        if vacuum:
            await conn.execute("VACUUM jobs")
        await conn.execute(f"INSERT INTO jobs ({columns}) {queued}", ("new-", EP, t, t, QUEUED))


async def _drain(store: ExplainedStore) -> None:
    """What one worker at concurrency 64 makes a server run while it drains the queue."""
    await store.touch_worker(EP, WORKER, now_ms(), held_job_ids=[])
    held = [job.id for job in await store.take(EP, WORKER, 64, now_ms(), LEASE_MS)]
    done = 0
    while held:
        job_id = held.pop(0)
        # as job-done posts it: fenced by the worker's id and the attempt it ran
        await store.finish(
            job_id,
            output_json="{}",
            error_json=None,
            now_ms=now_ms(),
            holder=Holder(WORKER, attempt=0),
            endpoint_id=EP,
        )
        done += 1
        if done % 4 == 0:
            # the take request: contact, the recycling check, then the take itself
            await store.touch_worker(EP, WORKER, now_ms())
            await store.worker(WORKER)
            held += [job.id for job in await store.take(EP, WORKER, 4, now_ms(), LEASE_MS)]
        if done % 16 == 0:
            # a heartbeat, the stop poll, the scaler's look and a sweep; more than five of
            # each, so their prepared statements get generic plans too
            await store.touch_worker(EP, WORKER, now_ms(), held_job_ids=held, lease_ms=LEASE_MS)
            await store.jobs_to_stop(WORKER)
            await store.queue_stats()
            await store.sweep(now_ms(), worker_lost_ms=LEASE_MS, max_retries=3)
    assert done == QUEUED


async def _explained_drain(retained: int, vacuum: bool = True) -> dict[str, list[dict[str, Any]]]:
    schema = f"t_{secrets.token_hex(6)}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    store = ExplainedStore(f"{POSTGRES_URL}{sep}options={quote(AUTO_EXPLAIN)}", schema=schema)
    try:
        try:
            await store.open()
        except Exception as exc:  # not a superuser, or no auto_explain in this installation
            pytest.skip(f"auto_explain cannot be loaded here: {exc}")
        await _fill(schema, retained, now_ms(), vacuum)
        store.plans.clear()
        await _drain(store)
    finally:
        await store.close()
        await drop_schema(schema)
    plans: dict[str, list[dict[str, Any]]] = {}
    for name, plan in store.plans:
        plans.setdefault(name, []).append(plan)
    return plans


@pytest.fixture(scope="module")
def drains() -> dict[int, dict[str, list[dict[str, Any]]]]:
    import asyncio

    return {n: asyncio.run(_explained_drain(n)) for n in (100, 10_000)}


def test_no_statement_scans_the_jobs_table(
    drains: dict[int, dict[str, list[dict[str, Any]]]],
) -> None:
    scans = {
        name
        for name, plans in drains[10_000].items()
        if name in HOT_PATH | PERIODIC
        for plan in plans
        for node in _nodes(plan)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "jobs"
    }
    assert not scans, f"statements reading every row of jobs: {sorted(scans)}"


def test_no_statement_costs_more_with_many_retained_jobs(
    drains: dict[int, dict[str, list[dict[str, Any]]]],
) -> None:
    few, many = drains[100], drains[10_000]
    assert HOT_PATH - {"let_go"} <= set(many), sorted(many)
    costs = {
        name: (round(_per_row(few[name]), 1), round(_per_row(plans), 1))
        for name, plans in many.items()
        if name in HOT_PATH | PERIODIC
    }
    grown = {
        name: cost for name, cost in costs.items() if cost[1] > GROWTH * cost[0] + SLACK_BUFFERS
    }
    assert not grown, f"buffers per row (100 retained, 10,000 retained): {grown}"
