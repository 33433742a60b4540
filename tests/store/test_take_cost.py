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

from neuroq.jobs import NewJob, now_ms
from neuroq.store.base import Holder, PostedResult
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

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await super()._configure(conn)
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


async def _open_explained(schema: str) -> ExplainedStore:
    """An open ExplainedStore on a new schema; skips the test where auto_explain cannot load."""
    sep = "&" if "?" in POSTGRES_URL else "?"
    store = ExplainedStore(f"{POSTGRES_URL}{sep}options={quote(AUTO_EXPLAIN)}", schema=schema)
    try:
        await store.open()
    except Exception as exc:  # not a superuser, or no auto_explain in this installation
        await drop_schema(schema)
        pytest.skip(f"auto_explain cannot be loaded here: {exc}")
    return store


async def _explained_drain(retained: int, vacuum: bool = True) -> dict[str, list[dict[str, Any]]]:
    schema = f"t_{secrets.token_hex(6)}"
    store = await _open_explained(schema)
    try:
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


#: what a user's job costs from submit to result, run many times a second: none may read more
#: as the table grows, even under plans made while it was empty
JOB_PATH = {"insert_job", "get", "take", "finish_batch", "finish"}
#: retained jobs added between the two rounds of `test_plans_made_on_an_empty_table_stay_cheap`
GROWN_BY = 5_000


async def _job_path_round(store: ExplainedStore, rounds: int) -> None:
    """Jobs as clients and a worker make them: keyed and keyless submits, status reads, a take,
    a batch of results and a single result; more than five of each, so their prepared
    statements get generic plans."""
    for _ in range(rounds):
        ids = []
        for i in range(4):
            key = secrets.token_hex(8) if i % 2 else None
            job, _ = await store.submit(NewJob(EP, "{}"), now_ms(), key)
            ids.append(job.id)
            assert await store.get(EP, job.id) is not None
        taken = await store.take(EP, WORKER, 4, now_ms(), LEASE_MS)
        assert sorted(job.id for job in taken) == sorted(ids)
        holder = Holder(WORKER, attempt=0)
        results = [PostedResult(job_id, "{}", None, holder) for job_id in ids[:3]]
        await store.finish_many(results, now_ms=now_ms(), endpoint_id=EP)
        await store.finish(
            ids[3],
            output_json="{}",
            error_json=None,
            now_ms=now_ms(),
            holder=holder,
            endpoint_id=EP,
        )
        for job_id in ids:
            assert await store.get(EP, job_id) is not None


async def test_plans_made_on_an_empty_table_stay_cheap_as_it_grows() -> None:
    """A new server prepares its statements while the jobs table is still empty and, without
    ANALYZE (autovacuum off, or not run yet), keeps those plans as the table fills. A plan that
    picked the wrong index then (a status read through `jobs_endpoint_status`, reading every
    job of the endpoint) grows with every job retained since. Each statement of the job path
    must read as many buffers per row next to GROWN_BY more retained jobs as before them."""
    schema = f"t_{secrets.token_hex(6)}"
    store = await _open_explained(schema)
    try:
        async with await psycopg.AsyncConnection.connect(
            POSTGRES_URL, options=f"-c search_path={schema}", autocommit=True
        ) as conn:
            await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        await _job_path_round(store, 10)
        before = store.plans[:]
        store.plans.clear()
        t = now_ms()
        async with await psycopg.AsyncConnection.connect(
            POSTGRES_URL, options=f"-c search_path={schema}", autocommit=True
        ) as conn:
            await conn.execute(
                "INSERT INTO jobs (id, endpoint_id, status, input_json, execution_timeout_ms,"
                " ttl_ms, low_priority, sync, created_at_ms, ttl_deadline_ms, finished_at_ms,"
                " output_json, expires_at_ms) SELECT 'old-' || g, %s, 'COMPLETED', '{}', 600000,"
                " 86400000, FALSE, FALSE, %s, %s, %s, '{}', %s FROM generate_series(1, %s) g",
                (EP, t, t + 86_400_000, t, t + 3_600_000, GROWN_BY),
            )
        await _job_path_round(store, 10)
        after = store.plans[:]
    finally:
        await store.close()
        await drop_schema(schema)

    def by_name(plans: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        named: dict[str, list[dict[str, Any]]] = {}
        for name, plan in plans:
            # the last five runs of each: generic plans where PostgreSQL chose them
            named.setdefault(name, []).append(plan)
        return {name: runs[-5:] for name, runs in named.items()}

    few, many = by_name(before), by_name(after)
    assert set(few) >= JOB_PATH and set(many) >= JOB_PATH, (sorted(few), sorted(many))
    costs = {
        name: (round(_per_row(few[name]), 1), round(_per_row(many[name]), 1)) for name in JOB_PATH
    }
    grown = {
        name: cost for name, cost in costs.items() if cost[1] > GROWTH * cost[0] + SLACK_BUFFERS
    }
    assert not grown, f"buffers per row (before, after {GROWN_BY:,} more retained jobs): {grown}"
