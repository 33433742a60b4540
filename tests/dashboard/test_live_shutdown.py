"""An open dashboard page holds a live poll for up to LIVE_HOLD_S; stopping the server must
answer it at once rather than wait out uvicorn's grace period and cancel it with a traceback."""

from __future__ import annotations

import time
from pathlib import Path

from dashstack import sign_in
from harness import Background, start_server

STOP_WITHIN_S = 2.0


def test_sigterm_answers_a_held_live_poll_at_once(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv")
    try:
        with sign_in(server) as client:
            version = client.get("/ui/live/overview").json()["v"]
            held = Background(lambda: client.get(f"/ui/live/overview?v={version}"))
            # the poll is held (it has not answered) before the stop begins
            assert not held.done(within_s=0.5)
            started = time.monotonic()
            server.terminate()
            elapsed_s = time.monotonic() - started
            reply = held.join(10.0)
    finally:
        server.stop()
    log = server.log()
    assert elapsed_s < STOP_WITHIN_S, f"the server took {elapsed_s:.1f} s to stop"
    assert reply.status_code == 200 and "parts" in reply.json()
    assert "Traceback" not in log and "ASGI" not in log, log
