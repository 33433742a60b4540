"""Worker processes the scaler starts, and the records that let a restarted scaler end them.

Each worker runs as the leader of a session of its own, so stopping it reaches whatever it
forked (the RunPod SDK forks a heartbeat process), and on Linux it is told to die with its
parent (SIGTERM, which drains it), so a scaler killed with -9 leaves no fleet behind. Each also
gets a pidfile in the scaler's state directory and the variable `NEUROQ_SCALER_WORKER`
(`<state dir>:<worker id>`) in its environment. A scaler that starts finds the pidfiles of the
one before it and ends what is left of those workers: a process counts as one only if its
environment carries that exact marker, so a recycled pid is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from neuroq.endpoints import EndpointConfig

log = logging.getLogger("neuroq.scaler")

MARKER_VAR = "NEUROQ_SCALER_WORKER"
_PR_SET_PDEATHSIG = 1


def runpod_worker_env(
    url: str, endpoint_id: str, worker_id: str, worker_key: str
) -> dict[str, str]:
    """What an unmodified RunPod SDK worker needs to attach (what `neuroq worker-env` prints)."""
    base = f"{url.rstrip('/')}/v2/{endpoint_id}"
    # The SDK substitutes $ID (job-take) and $RUNPOD_POD_ID / $ID (posts) itself and appends
    # "&name=value", so every template carries a "?" already.
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID",
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_AI_API_KEY": worker_key,
        "RUNPOD_PING_INTERVAL": "10000",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    }


def worker_argv(
    config: EndpointConfig, url: str, worker_id: str, grace_s: float, ping_interval_s: float
) -> list[str]:
    """The command line of one worker of `config`: `neuroq worker` for a handler, else the
    endpoint's own command, unchanged."""
    if config.command is not None:
        return list(config.command)
    assert config.handler is not None, "only endpoints that run workers get here"
    return [
        sys.executable,
        "-m",
        "neuroq",
        "worker",
        config.handler,
        "--url",
        url,
        "--endpoint",
        config.endpoint_id,
        "--worker-id",
        worker_id,
        "--concurrency",
        str(config.concurrency),
        "--grace",
        str(grace_s),
        "--ping-interval",
        str(ping_interval_s),
    ]


def worker_environ(
    config: EndpointConfig, url: str, worker_id: str, worker_key: str, marker: str
) -> dict[str, str]:
    env = dict(os.environ)
    if config.command is not None:
        # an SDK worker reads RUNPOD_* from its environment: none of ours may leak into it
        env = {k: v for k, v in env.items() if not k.startswith("RUNPOD_")}
        env.update(runpod_worker_env(url, config.endpoint_id, worker_id, worker_key))
    else:
        env["NEUROQ_WORKER_KEY"] = worker_key
    env.update(config.env)
    env[MARKER_VAR] = marker
    return env


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the scaler's process ends (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(eq=False)
class WorkerProcess:
    """One worker the scaler started."""

    worker_id: str
    endpoint_id: str
    proc: asyncio.subprocess.Process
    pidfile: Path
    #: what it was started with; a change to these replaces it
    spec: tuple[object, ...]
    started_ms: int
    idle_since_ms: int
    #: asked to stop (drain); it no longer counts towards the fleet
    stopping: bool = False
    stop_sent_s: float = 0.0
    #: it has reached the server at least once
    was_ready: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def drain(self) -> None:
        """SIGTERM: the worker stops taking jobs, finishes the ones it runs, and exits."""
        if not self.stopping:
            self.stopping = True
            self.stop_sent_s = time.monotonic()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill_group(self) -> None:
        """SIGKILL the worker and anything left in its session (after it exited, its forks)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def launch_spec(config: EndpointConfig) -> tuple[object, ...]:
    return (config.handler, config.command, config.concurrency, tuple(sorted(config.env.items())))


async def start_worker(
    config: EndpointConfig,
    url: str,
    worker_id: str,
    worker_key: str,
    state_dir: Path,
    grace_s: float,
    ping_interval_s: float,
    now_ms: int,
) -> WorkerProcess:
    marker = f"{state_dir.resolve()}:{worker_id}"
    proc = await asyncio.create_subprocess_exec(
        *worker_argv(config, url, worker_id, grace_s, ping_interval_s),
        env=worker_environ(config, url, worker_id, worker_key, marker),
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    pidfile = state_dir / f"{worker_id}.json"
    record = {"pid": proc.pid, "endpoint": config.endpoint_id, "marker": marker}
    pidfile.write_text(json.dumps(record))
    return WorkerProcess(
        worker_id, config.endpoint_id, proc, pidfile, launch_spec(config), now_ms, now_ms
    )


def _processes_marked(marker: str) -> list[int]:
    """Live processes whose environment holds our marker for one worker (Linux /proc)."""
    wanted = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X") and wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


async def end_stale_workers(state_dir: Path, grace_s: float) -> int:
    """End the workers a previous scaler on this state directory left running (it was killed
    before it could stop them): SIGTERM, so they finish their jobs, then SIGKILL after
    `grace_s`. Returns how many workers were found still running."""
    records = []
    for pidfile in sorted(state_dir.glob("*.json")):
        try:
            records.append((pidfile, json.loads(pidfile.read_text())["marker"]))
        except (OSError, ValueError, KeyError, TypeError):
            pidfile.unlink(missing_ok=True)
    alive: dict[Path, list[int]] = {}
    for pidfile, marker in records:
        pids = _processes_marked(str(marker)) if Path("/proc").is_dir() else []
        if pids:
            alive[pidfile] = pids
            log.warning(
                "ending worker %s left by a previous scaler (pids %s)",
                pidfile.stem,
                ", ".join(map(str, pids)),
            )
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        else:
            pidfile.unlink(missing_ok=True)
    found = len(alive)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        for pidfile, _ in records:
            if pidfile in alive and not _processes_marked(
                json.loads(pidfile.read_text())["marker"]
            ):
                del alive[pidfile]
                pidfile.unlink(missing_ok=True)
    for pidfile, _ in records:
        if pidfile in alive:
            for pid in _processes_marked(json.loads(pidfile.read_text())["marker"]):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            pidfile.unlink(missing_ok=True)
    return found
