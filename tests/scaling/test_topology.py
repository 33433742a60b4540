"""Several API servers on one PostgreSQL schema, as behind a load balancer.

Servers A, B and C share one schema. Worker "wa" takes jobs through A, worker "wb" through B;
clients submit through all three in turn, moving on to the next server when one does not answer
(each logical job carries an Idempotency-Key, so a submit that reached a server before the reply
was lost is not duplicated). The handler (record_handler.py) logs every execution to a file.

- Without failures every job completes exactly once: one COMPLETED record, one execution.
- With A killed by SIGKILL mid-load, nothing acknowledged is lost: clients fail over to B and C,
  "wa" is replaced by a worker on C, the jobs "wa" held are requeued once their lease (3 s)
  lapses, and every acknowledged job ends COMPLETED, once. Only jobs "wa" was running may have
  run twice: their results could not be delivered once A was gone.

Skips without NEUROQ_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import httpx
import psycopg
import pytest
from harness import wait_for

HANDLER = str(Path(__file__).with_name("record_handler.py")) + ":handler"
CLIENT_THREADS = 4
#: jobs in the no-failure run; the SIGKILL run submits twice as many
JOBS = 80
WORKER_LOST_S = 3
SERVER_SETTINGS = {
    # The lease is worker_lost_s: short, so a killed server's jobs come back quickly.
    "NEUROQ_WORKER_LOST_S": str(WORKER_LOST_S),
    "NEUROQ_MAX_RETRIES": "3",
    "NEUROQ_LOG_LEVEL": "WARNING",
}
WORKER_ARGS = ("--concurrency", "4", "--ping-interval", "0.5", "--grace", "5")

pytestmark = pytest.mark.timeout(120)


@dataclass
class Topology:
    """Three servers on one schema, a worker on each of the first two, an execution log."""

    tmp: Path
    store_url: str
    endpoint: str = field(default_factory=lambda: "ep-" + uuid.uuid4().hex[:8])
    servers: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, Any] = field(default_factory=dict)

    @property
    def exec_log(self) -> Path:
        return self.tmp / "executions.jsonl"

    def start(self) -> Topology:
        env = {"NEUROQ_STORE": self.store_url, **SERVER_SETTINGS}
        with ThreadPoolExecutor(3) as pool:
            started = {
                n: pool.submit(harness.start_server, self.tmp / f"server-{n}", **env) for n in "abc"
            }
        for name, future in started.items():
            if future.exception() is None:
                self.servers[name] = future.result()
        for future in started.values():
            future.result()  # re-raises a failed start once the others can be stopped
        # "wa" works slower, so when the kill test stops it mid-load it surely still holds jobs.
        self.start_worker("wa", "a", work_s=0.3)
        self.start_worker("wb", "b")
        wait_for(lambda: self.workers_seen() >= 2, 60, "both workers to ask for jobs")
        return self

    def workers_seen(self) -> int:
        srv = self.servers["c"]
        reply = httpx.get(f"{srv.base_url}/{self.endpoint}/health", headers=srv.client_headers)
        return sum(reply.json()["workers"].values())

    def start_worker(self, tag: str, server: str, work_s: float | None = None) -> None:
        extra = {"NEUROQ_TEST_WORK_S": str(work_s)} if work_s is not None else {}
        self.workers[tag] = harness.start_worker(
            self.servers[server],
            HANDLER,
            self.endpoint,
            self.tmp / "workers",
            *WORKER_ARGS,
            "--worker-id",
            tag,
            NEUROQ_TEST_EXEC_LOG=str(self.exec_log),
            NEUROQ_TEST_WORKER_TAG=tag,
            **extra,
        )

    def stop(self) -> None:
        for w in self.workers.values():
            w.kill()
        for s in self.servers.values():
            s.stop()

    def executions(self) -> dict[str, list[str]]:
        """job id -> the workers that ran it, in log order."""
        ran: dict[str, list[str]] = defaultdict(list)
        if self.exec_log.exists():
            for line in self.exec_log.read_text().splitlines():
                entry = json.loads(line)
                ran[entry["job"]].append(entry["worker"])
        return ran

    def running_on(self, worker_id: str) -> int:
        return len(self.held_by(worker_id))

    def held_by(self, worker_id: str) -> set[str]:
        """Ids of the jobs the store has IN_PROGRESS on this worker."""
        schema = self.store_url.rpartition("schema=")[2]
        with psycopg.connect(harness.POSTGRES_URL) as conn:
            rows = conn.execute(
                f"SELECT id FROM \"{schema}\".jobs WHERE status = 'IN_PROGRESS' AND worker_id = %s",
                (worker_id,),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def job_rows(self) -> dict[str, tuple[str, int]]:
        """Straight from the shared schema: job id -> (status, retries)."""
        schema = self.store_url.rpartition("schema=")[2]
        with psycopg.connect(harness.POSTGRES_URL) as conn:
            rows = conn.execute(
                f'SELECT id, status, retries FROM "{schema}".jobs WHERE endpoint_id = %s',
                (self.endpoint,),
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """One topology for the module: the failure-free test runs first, the SIGKILL test last."""
    with harness.store_env("postgres") as env:
        topo = Topology(tmp_path_factory.mktemp("topology"), env["NEUROQ_STORE"])
        try:
            yield topo.start()
        finally:
            topo.stop()


class Clients:
    """CLIENT_THREADS threads submitting `total` jobs round-robin over the servers, each job to
    the next server that answers. `acked` maps idempotency key -> job id once a server said 200."""

    def __init__(self, topo: Topology, total: int) -> None:
        self.topo = topo
        self.total = total
        #: idempotency keys are per test, as the two tests share one endpoint
        self.prefix = uuid.uuid4().hex[:8]
        self.acked: dict[str, str] = {}
        self.failovers = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True)
            for t in range(CLIENT_THREADS)
        ]

    def start(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join(60)
        assert not any(t.is_alive() for t in self._threads), "clients did not finish"
        assert not self.errors, self.errors

    def _run(self, thread: int) -> None:
        names = list(self.topo.servers)
        http = {
            name: httpx.Client(
                base_url=srv.base_url, headers=srv.client_headers, timeout=httpx.Timeout(10)
            )
            for name, srv in self.topo.servers.items()
        }
        try:
            for n in range(thread, self.total, CLIENT_THREADS):
                key = f"{self.prefix}-{n}"
                self._submit(key, [names[(n + i) % len(names)] for i in range(len(names))], http)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            for c in http.values():
                c.close()

    def _submit(self, key: str, order: list[str], http: dict[str, httpx.Client]) -> None:
        for attempt in range(3 * len(order)):
            name = order[attempt % len(order)]
            try:
                reply = http[name].post(
                    f"/{self.topo.endpoint}/run",
                    json={"input": {"key": key}},
                    headers={"Idempotency-Key": key},
                )
            except httpx.TransportError:
                with self._lock:
                    self.failovers += 1
                continue
            assert reply.status_code == 200, reply.text
            with self._lock:
                self.acked[key] = reply.json()["id"]
            return
        raise AssertionError(f"no server accepted {key}")


def wait_all_completed(topo: Topology, job_ids: set[str], timeout_s: float) -> None:
    def done() -> bool:
        rows = topo.job_rows()
        return all(rows.get(j, ("", 0))[0] == "COMPLETED" for j in job_ids)

    wait_for(done, timeout_s, f"{len(job_ids)} jobs to complete")


def assert_completed_over_http(srv: Any, endpoint: str, job_ids: set[str]) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    with httpx.Client(base_url=srv.base_url, headers=srv.client_headers, timeout=10) as c:
        for job_id in job_ids:
            body = c.get(f"/{endpoint}/status/{job_id}").json()
            assert body["status"] == "COMPLETED", body
            outputs[job_id] = body["output"]
    return outputs


def test_every_job_runs_exactly_once_across_servers(topology: Topology) -> None:
    earlier = set(topology.job_rows())
    clients = Clients(topology, total=JOBS).start()
    clients.join()
    job_ids = set(clients.acked.values())
    assert len(job_ids) == JOBS and clients.failovers == 0
    wait_all_completed(topology, job_ids, 60)

    rows = {j: row for j, row in topology.job_rows().items() if j not in earlier}
    assert set(rows) == job_ids and {r for r, _ in rows.values()} == {"COMPLETED"}
    ran = {j: w for j, w in topology.executions().items() if j not in earlier}
    assert set(ran) == job_ids
    twice = {j: w for j, w in ran.items() if len(w) != 1}
    assert not twice, f"jobs run more than once: {twice}"
    # Both workers took from the one queue, each through its own server.
    assert Counter(w[0] for w in ran.values()).keys() == {"wa", "wb"}
    outputs = assert_completed_over_http(topology.servers["c"], topology.endpoint, job_ids)
    assert all(outputs[j] == {"worker": ran[j][0]} for j in job_ids)


def test_sigkill_of_one_server_mid_load_loses_nothing(topology: Topology) -> None:
    total = 2 * JOBS
    earlier = set(topology.job_rows())
    clients = Clients(topology, total=total).start()
    # Kill A once a share of the load is through and "wa" holds jobs, so A has clients
    # mid-submit and "wa" has work whose results can no longer be delivered.
    wait_for(
        lambda: len(clients.acked) >= total // 3 and topology.running_on("wa") >= 2,
        30,
        "load to build up",
        interval_s=0.005,
    )
    # "wa" dies first, then its server; only then are the attempts "wa" still holds certainly
    # lost (read earlier, a result "wa" posted just before dying could still commit on "a").
    topology.workers["wa"].kill()
    topology.servers["a"].kill()
    lost = topology.held_by("wa")
    # What a supervisor does: the worker that lost its server is restarted against another.
    topology.start_worker("wa2", "c")
    clients.join()

    job_ids = set(clients.acked.values())
    assert len(clients.acked) == total and len(job_ids) == total
    assert clients.failovers > 0, "no client ever met the dead server: nothing was tested"
    wait_all_completed(topology, job_ids, 60)

    rows = {j: row for j, row in topology.job_rows().items() if j not in earlier}
    assert set(rows) == job_ids, "a retried submit created a second job"
    assert {status for status, _ in rows.values()} == {"COMPLETED"}
    ran = {j: w for j, w in topology.executions().items() if j not in earlier}
    assert set(ran) == job_ids, "an acknowledged job never ran"
    rerun = {j: w for j, w in ran.items() if len(w) > 1}
    # A job runs again only when "wa" ran it and could not report: its lease lapsed and it went
    # back to the queue (retries > 0), and it was "wa"'s attempt that was lost.
    for job_id, workers in rerun.items():
        assert workers[0] == "wa" and "wa" not in workers[1:], (job_id, workers)
        assert rows[job_id][1] >= 1
    # The attempts "wa" held when it died were lost: those jobs went back through the lease.
    assert lost, "wa held no job when it was killed: the lease path was not exercised"
    assert all(rows[job_id][1] >= 1 for job_id in lost), {j: rows[j] for j in lost}
    assert_completed_over_http(topology.servers["b"], topology.endpoint, job_ids)
