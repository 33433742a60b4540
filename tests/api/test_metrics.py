"""/metrics after a known workload: every count exact.

A real server and real workers run a fixed set of jobs (completed, failed, cancelled, purged, an
idempotent repeat, one left queued, two webhooks of which one fails); the scrape must show those
numbers and nothing more. The sweep path (timeouts) is checked on a real SQLite store, where time
can be moved forward instead of waited for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess, start_server, start_worker, wait_for
from prometheus_client.parser import text_string_to_metric_families

from neuroq.api.metrics import Metrics
from neuroq.jobs import JobStatus, NewJob, Policy, now_ms
from neuroq.store.sqlite import SQLiteStore

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.url}/metrics", headers=headers or server.client_headers)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def webhook_counts(samples: Samples) -> tuple[float | None, float | None]:
    """(deliveries, final failures) in a scrape."""
    delivered = value(samples, "neuroq_webhook_deliveries_total")
    return delivered, value(samples, "neuroq_webhook_failures_total", final="true")


class Receiver:
    """Webhook target on loopback: /ok answers 200, anything else 500."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.paths.append(self.path)
                self.send_response(200 if self.path == "/ok" else 500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_metrics_after_a_known_workload(tmp_path: Path, receiver: Receiver) -> None:
    server = start_server(tmp_path / "srv", NEUROQ_WEBHOOK_RETRIES="0")
    workers = [
        start_worker(server, "neuroq.demo_handlers:echo", "m-echo", tmp_path),
        start_worker(server, "neuroq.demo_handlers:fail", "m-fail", tmp_path),
    ]
    try:
        base, auth = server.base_url, server.client_headers
        with httpx.Client(headers=auth, timeout=60) as http:
            for i in range(3):
                body: dict[str, object] = {"input": {"n": i}}
                if i == 0:
                    body["webhook"] = receiver.url("/ok")
                done = http.post(f"{base}/m-echo/runsync", json=body).json()
                assert done["status"] == "COMPLETED"
            failed = http.post(
                f"{base}/m-fail/runsync", json={"input": {}, "webhook": receiver.url("/bad")}
            ).json()
            assert failed["status"] == "FAILED"
            # m-idle has no worker: one idempotent pair, one cancelled, the rest purged
            key = {"Idempotency-Key": "same-1"}
            first = http.post(f"{base}/m-idle/run", json={"input": {}}, headers=key).json()
            again = http.post(f"{base}/m-idle/run", json={"input": {}}, headers=key).json()
            assert first["id"] == again["id"]
            cancel_me = http.post(f"{base}/m-idle/run", json={"input": {}}).json()
            http.post(f"{base}/m-idle/run", json={"input": {}})
            assert http.post(f"{base}/m-idle/cancel/{cancel_me['id']}").json()["status"] == (
                "CANCELLED"
            )
            assert http.post(f"{base}/m-idle/purge-queue").json()["removed"] == 2
            http.post(f"{base}/m-queue/run", json={"input": {}})
            assert http.get(f"{server.url}/no/such/route").status_code == 404

        # Webhooks go out in the background: poll the scrape until both attempts are counted.
        samples = wait_for(
            lambda: parse(scrape(server).text),
            20,
            "one webhook delivered and one given up in the scrape",
            until=lambda found: webhook_counts(found) == (1, 1),
        )
    finally:
        for worker in workers:
            worker.stop()
        server.stop()

    assert sorted(receiver.paths) == ["/bad", "/ok"]
    expected = {
        ("neuroq_jobs_submitted_total", (("endpoint", "m-echo"),)): 3,
        ("neuroq_jobs_submitted_total", (("endpoint", "m-fail"),)): 1,
        ("neuroq_jobs_submitted_total", (("endpoint", "m-idle"),)): 3,
        ("neuroq_jobs_submitted_total", (("endpoint", "m-queue"),)): 1,
    }
    assert {k: v for k, v in samples.items() if k[0] == "neuroq_jobs_submitted_total"} == expected
    finished = {k: v for k, v in samples.items() if k[0] == "neuroq_jobs_finished_total"}
    assert finished == {
        ("neuroq_jobs_finished_total", (("endpoint", "m-echo"), ("status", "COMPLETED"))): 3,
        ("neuroq_jobs_finished_total", (("endpoint", "m-fail"), ("status", "FAILED"))): 1,
        ("neuroq_jobs_finished_total", (("endpoint", "m-idle"), ("status", "CANCELLED"))): 3,
    }
    assert value(samples, "neuroq_queue_depth", endpoint="m-queue") == 1
    assert value(samples, "neuroq_queue_depth", endpoint="m-idle") == 0
    assert value(samples, "neuroq_jobs_in_progress", endpoint="m-echo") == 0
    assert value(samples, "neuroq_job_delay_seconds_count", endpoint="m-echo") == 3
    assert value(samples, "neuroq_job_delay_seconds_count", endpoint="m-fail") == 1
    assert (
        value(samples, "neuroq_job_execution_seconds_count", endpoint="m-echo", status="COMPLETED")
        == 3
    )
    assert value(samples, "neuroq_workers", endpoint="m-echo", state="ready") == 1
    assert value(samples, "neuroq_workers", endpoint="m-fail", state="ready") == 1
    assert value(samples, "neuroq_webhook_deliveries_total") == 1
    assert value(samples, "neuroq_webhook_failures_total", final="true") == 1
    assert value(samples, "neuroq_webhook_failures_total", final="false") == 0

    def requests(method: str, route: str, code: str) -> float | None:
        return value(samples, "neuroq_http_requests_total", method=method, route=route, code=code)

    assert requests("POST", "/v2/{endpoint_id}/runsync", "200") == 4
    assert requests("POST", "/v2/{endpoint_id}/run", "200") == 5
    assert requests("POST", "/v2/{endpoint_id}/cancel/{job_id}", "200") == 1
    assert requests("POST", "/v2/{endpoint_id}/purge-queue", "200") == 1
    assert requests("GET", "(unmatched)", "404") == 1
    # raw paths never become labels
    assert not any("m-echo" in dict(labels).get("route", "") for _, labels in samples)


def test_metrics_need_the_client_key_unless_public(tmp_path: Path) -> None:
    server = start_server(tmp_path / "private")
    try:
        assert scrape(server, Authorization="Bearer wrong").status_code == 401
        assert scrape(server, Authorization=f"Bearer {server.worker_key}").status_code == 401
        ok = scrape(server)
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")
    finally:
        server.stop()
    public = start_server(tmp_path / "public", NEUROQ_METRICS_PUBLIC="true")
    try:
        assert httpx.get(f"{public.url}/metrics").status_code == 200
    finally:
        public.stop()


async def test_sweeps_retries_and_repeat_cancels_count_once(tmp_path: Path) -> None:
    metrics = Metrics()
    store = SQLiteStore(tmp_path / "db.sqlite")
    store.events.subscribe(metrics.on_store_event)
    await store.open()
    try:
        t0 = now_ms()
        policy = Policy(ttl_ms=10_000)
        queued, _ = await store.submit(NewJob("ep", "{}", policy, id="q-1"), t0)
        await store.submit(NewJob("ep", "{}", policy, id="r-1"), t0)
        (running,) = await store.take("ep", "w-1", 1, t0 + 5, lease_ms=60_000)
        assert running.id == "q-1" and queued.id == "q-1"
        result = await store.sweep(t0 + 20_000, worker_lost_ms=600_000, max_retries=1)
        assert sorted(result.timed_out) == ["q-1", "r-1"]
        timed_out = metrics.finished_total.labels("ep", JobStatus.TIMED_OUT.value)
        assert timed_out._value.get() == 2
        assert metrics.execution.labels("ep", "TIMED_OUT")._sum.get() == pytest.approx(19.995)

        assert await store.retry("ep", "r-1", t0 + 20_001) is not None
        assert metrics.retried.labels("ep")._value.get() == 1
        assert await store.cancel("ep", "r-1", t0 + 20_002) is not None
        assert await store.cancel("ep", "r-1", t0 + 20_003) is not None  # already terminal
        cancelled = metrics.finished_total.labels("ep", JobStatus.CANCELLED.value)
        assert cancelled._value.get() == 1
        assert metrics.finished == {("ep", "TIMED_OUT"): 2, ("ep", "CANCELLED"): 1}
    finally:
        await store.close()
