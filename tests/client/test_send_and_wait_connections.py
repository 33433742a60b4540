"""send_and_wait reuses one keep-alive connection across calls with the same settings (against
hosted RunPod each new connection costs a TLS handshake), and never shares it across settings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from neuroq import send_and_wait


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0


class RunsyncHandler(BaseHTTPRequestHandler):
    """Answers every runsync at once with a COMPLETED status echoing the input."""

    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        CountingServer.connections += 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"id": "j", "status": "COMPLETED", "output": body["input"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    CountingServer.connections = 0
    server = CountingServer(("127.0.0.1", 0), RunsyncHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v2"
    server.shutdown()
    server.server_close()


def test_calls_with_the_same_settings_share_one_connection(base_url: str) -> None:
    for i in range(5):
        result = send_and_wait({"i": i}, 30, endpoint_id="ep", api_key="k", base_url=base_url)
        assert result == {"output": {"i": i}}
    assert CountingServer.connections == 1


def test_other_settings_get_their_own_client(base_url: str) -> None:
    send_and_wait({"i": 0}, 30, endpoint_id="ep", api_key="k1", base_url=base_url)
    send_and_wait({"i": 1}, 30, endpoint_id="ep", api_key="k2", base_url=base_url)
    send_and_wait({"i": 2}, 30, endpoint_id="ep", api_key="k1", base_url=base_url)
    assert CountingServer.connections == 2
