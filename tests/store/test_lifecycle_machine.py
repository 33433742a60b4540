"""Random sequences of store operations checked against a small model of the job lifecycle."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from neuroq.jobs import TRANSITIONS, JobStatus, NewJob, Policy, now_ms
from neuroq.store.base import Holder, InvalidTransition
from neuroq.store.sqlite import SQLiteStore

EP = "ep-model"
LEASE = 30_000
MAX_RETRIES = 1
WORKERS = st.sampled_from(["w1", "w2"])


@dataclass
class ModelJob:
    order: int
    low: bool
    status: JobStatus = JobStatus.IN_QUEUE
    retries: int = 0
    worker: str | None = None
    lease_until: int = 0


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="neuroq-model-")
        self.store = SQLiteStore(Path(self.dir) / "model.db")
        self.run(self.store.open())
        self.jobs: dict[str, ModelJob] = {}
        #: the state each job had at the last invariant check, to check each change it made
        self.seen: dict[str, JobStatus] = {}
        self.clock = now_ms()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tick(self, ms: int = 1) -> int:
        self.clock += ms
        return self.clock

    def queued_in_take_order(self) -> list[str]:
        queued = [
            (j.low, j.order, i) for i, j in self.jobs.items() if j.status is JobStatus.IN_QUEUE
        ]
        return [i for _, _, i in sorted(queued)]

    @rule(low=st.booleans())
    def submit(self, low: bool) -> None:
        nj = NewJob(EP, json.dumps(len(self.jobs)), policy=Policy(low_priority=low))
        job, created = self.run(self.store.submit(nj, self.tick()))
        assert created
        self.jobs[job.id] = ModelJob(order=len(self.jobs), low=low)

    @rule(worker=WORKERS, limit=st.integers(1, 3))
    def take(self, worker: str, limit: int) -> None:
        t = self.tick()
        expected = self.queued_in_take_order()[:limit]
        taken = self.run(self.store.take(EP, worker, limit, t, LEASE))
        assert [j.id for j in taken] == expected
        for job_id in expected:
            model = self.jobs[job_id]
            model.status, model.worker, model.lease_until = JobStatus.IN_PROGRESS, worker, t + LEASE

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), error=st.booleans(), as_holder=st.booleans())
    def finish(self, data: st.DataObject, error: bool, as_holder: bool) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        worker = (model.worker or "w1") if as_holder else "someone-else"
        done = self.run(
            self.store.finish(
                job_id,
                output_json=None if error else "1",
                error_json='"e"' if error else None,
                now_ms=self.tick(),
                holder=Holder(worker),
            )
        )
        if model.status is JobStatus.IN_PROGRESS and model.worker == worker:
            assert done is not None
            model.status = JobStatus.FAILED if error else JobStatus.COMPLETED
        else:
            assert done is None

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        job = self.run(self.store.cancel(EP, job_id, self.tick()))
        assert job is not None
        if not model.status.is_terminal:
            assert job.stop_pending == (model.status is JobStatus.IN_PROGRESS)
            model.status = JobStatus.CANCELLED
        assert job.status is model.status

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        if model.status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            job = self.run(self.store.retry(EP, job_id, self.tick()))
            assert job is not None and job.status is JobStatus.IN_QUEUE
            model.status, model.worker, model.retries = JobStatus.IN_QUEUE, None, model.retries + 1
        else:
            try:
                self.run(self.store.retry(EP, job_id, self.tick()))
            except InvalidTransition as exc:
                assert exc.job.status is model.status
            else:
                raise AssertionError(f"retry from {model.status} was accepted")

    @rule(worker=WORKERS)
    def release(self, worker: str) -> None:
        held = [
            i
            for i, j in self.jobs.items()
            if j.status is JobStatus.IN_PROGRESS and j.worker == worker
        ]
        assert self.run(self.store.release(sorted(self.jobs), worker, self.tick())) == len(held)
        for job_id in held:
            self.jobs[job_id].status, self.jobs[job_id].worker = JobStatus.IN_QUEUE, None

    @rule(worker=WORKERS)
    def heartbeat(self, worker: str) -> None:
        t = self.tick()
        held = [
            i
            for i, j in self.jobs.items()
            if j.status is JobStatus.IN_PROGRESS and j.worker == worker
        ]
        self.run(self.store.touch_worker(EP, worker, t, held_job_ids=held, lease_ms=LEASE))
        for job_id in held:
            self.jobs[job_id].lease_until = t + LEASE

    @rule(ms=st.sampled_from([1_000, LEASE // 2, LEASE]))
    def sweep(self, ms: int) -> None:
        t = self.tick(ms)
        result = self.run(self.store.sweep(t, 10**9, MAX_RETRIES))
        requeued, failed = [], []
        for job_id, model in self.jobs.items():
            if model.status is JobStatus.IN_PROGRESS and model.lease_until <= t:
                if model.retries < MAX_RETRIES:
                    model.status, model.retries = JobStatus.IN_QUEUE, model.retries + 1
                    requeued.append(job_id)
                else:
                    model.status = JobStatus.FAILED
                    failed.append(job_id)
                model.worker = None
        assert sorted(result.requeued) == sorted(requeued)
        assert sorted(result.failed_lost) == sorted(failed)
        assert result.timed_out == []

    @invariant()
    def store_matches_model(self) -> None:
        for job_id, model in self.jobs.items():
            job = self.run(self.store.get(EP, job_id))
            assert job is not None
            assert (job.status, job.retries) == (model.status, model.retries), job_id
            before = self.seen.get(job_id, JobStatus.IN_QUEUE)
            # Every change the store made is one that neuroq.jobs.TRANSITIONS allows.
            assert job.status == before or job.status in TRANSITIONS[before], (before, job.status)
            self.seen[job_id] = job.status
            if model.status is JobStatus.IN_PROGRESS:
                assert job.worker_id == model.worker


Lifecycle.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_lifecycle = Lifecycle.TestCase
