"""Random interleavings of take / ping / done / progress / stream / lease expiry / cancel for three
workers, checked against a model that knows which jobs each worker really has.

A take's reply may be lost (the store leased the job, the worker never saw it); a worker pings
with the jobs it has, posts results, progress and chunks for jobs it has *or* for any job at all
(a zombie or a stranger). The properties, on SQLite and on PostgreSQL when it is configured:

- no result, progress or chunk from a worker that does not hold the job's current attempt is
  ever stored: every stored output and chunk names the worker (and attempt) that held the job;
- a lease is renewed only for a job its holder has (a lost delivery is never kept alive), and
  after every sweep no job is IN_PROGRESS without a live lease.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from neuroq.jobs import JobStatus, NewJob, now_ms
from neuroq.store.base import Holder, JobStore

EP = "ep-fence"
LEASE = 30_000
MAX_RETRIES = 2
WORKERS = ("w1", "w2", "w3")
POSTGRES_URL = os.environ.get("NEUROQ_TEST_POSTGRES_URL", "")


@dataclass
class ModelJob:
    status: JobStatus = JobStatus.IN_QUEUE
    retries: int = 0
    holder: str | None = None
    lease_until: int | None = None
    #: what the holder of the current attempt has streamed, in order
    chunks: list[str] = field(default_factory=list)
    progress: str | None = None
    output: str | None = None


class Fencing(RuleBasedStateMachine):
    backend: ClassVar[str] = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="neuroq-fence-")
        self.schema = f"f_{secrets.token_hex(6)}"
        self.store: JobStore = self.run(self._open())
        self.jobs: dict[str, ModelJob] = {}
        #: the jobs each worker really has (a lost take reply never reaches it)
        self.has: dict[str, set[str]] = {w: set() for w in WORKERS}
        self.clock = now_ms()
        self.last_sweep = 0

    async def _open(self) -> JobStore:
        store: JobStore
        if self.backend == "sqlite":
            from neuroq.store.sqlite import SQLiteStore

            store = SQLiteStore(Path(self.dir) / "fence.db")
        else:
            from neuroq.store.postgres import PostgresStore

            store = PostgresStore(POSTGRES_URL, schema=self.schema)
        await store.open()
        return store

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        if self.backend == "postgres":
            self.run(_drop_schema(self.schema))
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tick(self, ms: int = 1) -> int:
        self.clock += ms
        return self.clock

    def holds(self, worker: str, job_id: str) -> bool:
        model = self.jobs[job_id]
        return model.status is JobStatus.IN_PROGRESS and model.holder == worker

    def target(self, data: st.DataObject, worker: str) -> str:
        """A job the worker has, or (a zombie or stranger's post) any job at all."""
        # Jobs in submission order, never by id: ids are random, and a draw must pick the same
        # job whenever Hypothesis replays the same choices (else it reports a flaky strategy).
        everyone = list(self.jobs)
        pool = [j for j in everyone if j in self.has[worker]] or everyone
        return data.draw(st.sampled_from(pool if data.draw(st.booleans()) else everyone))

    def let_go(self, worker: str, job_id: str) -> None:
        self.has[worker].discard(job_id)

    # -- rules -------------------------------------------------------------------------------

    @rule()
    def submit(self) -> None:
        job, _ = self.run(self.store.submit(NewJob(EP, json.dumps(len(self.jobs))), self.tick()))
        self.jobs[job.id] = ModelJob()

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 2), lost=st.booleans())
    def take(self, worker: str, limit: int, lost: bool) -> None:
        t = self.tick()
        taken = self.run(self.store.take(EP, worker, limit, t, LEASE))
        for job in taken:
            model = self.jobs[job.id]
            assert model.status is JobStatus.IN_QUEUE, (job.id, model.status)
            model.status, model.holder, model.lease_until = JobStatus.IN_PROGRESS, worker, t + LEASE
            model.chunks, model.progress = [], None
            assert job.retries == model.retries
            if not lost:
                self.has[worker].add(job.id)

    @rule(worker=st.sampled_from(WORKERS))
    def ping(self, worker: str) -> None:
        t = self.tick()
        held = sorted(self.has[worker])
        self.run(self.store.touch_worker(EP, worker, t, held_job_ids=held, lease_ms=LEASE))
        for job_id in held:
            if self.holds(worker, job_id):
                self.jobs[job_id].lease_until = t + LEASE

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def poll(self, worker: str, data: st.DataObject) -> None:
        """A take with job_in_progress=1 or a stop poll: contact, no list, no renewal."""
        self.run(self.store.touch_worker(EP, worker, self.tick(), lease_ms=LEASE))

    @precondition(lambda self: self.jobs)
    @rule(worker=st.sampled_from(WORKERS), data=st.data(), error=st.booleans())
    def done(self, worker: str, data: st.DataObject, error: bool) -> None:
        job_id = self.target(data, worker)
        model = self.jobs[job_id]
        mark = json.dumps(f"{worker}@{model.retries}")
        result = self.run(
            self.store.finish(
                job_id,
                output_json=None if error else mark,
                error_json=mark if error else None,
                now_ms=self.tick(),
                holder=Holder(worker),
            )
        )
        if self.holds(worker, job_id):
            assert result is not None
            model.status = JobStatus.FAILED if error else JobStatus.COMPLETED
            model.output, model.lease_until = mark, None
        else:
            assert result is None, (worker, job_id, model)
        self.let_go(worker, job_id)

    @precondition(lambda self: self.jobs)
    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def stream(self, worker: str, data: st.DataObject) -> None:
        job_id = self.target(data, worker)
        t = self.tick()
        chunk = json.dumps(worker)
        seq = self.run(self.store.append_stream(job_id, chunk, t, Holder(worker), LEASE))
        if self.holds(worker, job_id):
            assert seq is not None
            self.jobs[job_id].chunks.append(chunk)
            self.jobs[job_id].lease_until = t + LEASE
        else:
            assert seq is None, (worker, job_id)

    @precondition(lambda self: self.jobs)
    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def progress(self, worker: str, data: st.DataObject) -> None:
        job_id = self.target(data, worker)
        t = self.tick()
        mark = json.dumps(worker)
        stored = self.run(self.store.record_progress(job_id, mark, t, Holder(worker), LEASE))
        assert stored == self.holds(worker, job_id), (worker, job_id)
        if stored:
            self.jobs[job_id].progress = mark
            self.jobs[job_id].lease_until = t + LEASE

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(list(self.jobs)))
        self.run(self.store.cancel(EP, job_id, self.tick()))
        model = self.jobs[job_id]
        if not model.status.is_terminal:
            model.status, model.lease_until = JobStatus.CANCELLED, None

    @rule(ms=st.sampled_from([1_000, LEASE // 2, LEASE]))
    def sweep(self, ms: int) -> None:
        t = self.tick(ms)
        result = self.run(self.store.sweep(t, 10**9, MAX_RETRIES))
        expected_requeued, expected_failed = [], []
        for job_id, model in self.jobs.items():
            if model.status is JobStatus.IN_PROGRESS:
                assert model.lease_until is not None
                if model.lease_until <= t:
                    if model.retries < MAX_RETRIES:
                        model.status, model.retries = JobStatus.IN_QUEUE, model.retries + 1
                        expected_requeued.append(job_id)
                    else:
                        model.status = JobStatus.FAILED
                        expected_failed.append(job_id)
                    model.holder, model.lease_until = None, None
                    model.chunks, model.progress = [], None
        assert sorted(result.requeued) == sorted(expected_requeued)
        assert sorted(result.failed_lost) == sorted(expected_failed)
        self.last_sweep = t

    # -- properties --------------------------------------------------------------------------

    @invariant()
    def only_holders_wrote_and_every_running_job_has_a_live_lease(self) -> None:
        for job_id, model in self.jobs.items():
            job = self.run(self.store.get(EP, job_id))
            assert job is not None
            assert (job.status, job.retries) == (model.status, model.retries), job_id
            if job.status is JobStatus.IN_PROGRESS:
                assert job.worker_id == model.holder
                # renewed exactly when the holder showed it has the job, never otherwise
                assert job.lease_expires_at_ms == model.lease_until, job_id
                assert job.lease_expires_at_ms is not None
                assert job.lease_expires_at_ms > self.last_sweep
                assert job.output_json == model.progress
                stream = self.run(self.store.read_stream(EP, job_id, after_seq=0))
                assert [chunk for _, chunk in stream[1]] == model.chunks
            elif job.status in (JobStatus.COMPLETED, JobStatus.FAILED) and model.output:
                written = job.output_json if job.status is JobStatus.COMPLETED else job.error_json
                assert written == model.output, job_id


async def _drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class FencingOnPostgres(Fencing):
    backend = "postgres"


Fencing.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
FencingOnPostgres.TestCase.settings = settings(
    max_examples=15, stateful_step_count=30, deadline=None
)
test_fencing_on_sqlite = Fencing.TestCase
test_fencing_on_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="set NEUROQ_TEST_POSTGRES_URL to run the fencing model on PostgreSQL"
)(FencingOnPostgres.TestCase)
