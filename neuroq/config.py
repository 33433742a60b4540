"""Server settings: every default in one place, each overridable by a `NEUROQ_*` variable or a
command-line flag (flags win over the environment, the environment over these defaults)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MB = 1024 * 1024
#: the endpoint the CLI, the examples and the dashboard's playground use when none is named
DEFAULT_ENDPOINT = "neuroq"


def _split_keys(value: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in value.split(",") if k.strip())


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: where the SQLite database, generated keys, checkpoints and sessions live
    data_dir: Path = Path(".neuroq")
    #: None = SQLite in data_dir; "postgresql://..." = PostgreSQL
    store: str | None = None
    #: PostgreSQL: the most connections one server process holds (its pool); each request
    #: borrows one for a transaction, so this bounds the process's concurrent store work
    store_pool_size: int = 10
    #: cap on the SQLite database file; 0 = none. Past it, writes answer 503 as on a full disk
    #: while reads go on, so the queue cannot fill the volume it shares with other files
    sqlite_max_size_mb: int = 0
    #: client keys; empty = one is generated into data_dir/api_key and printed once
    api_keys: tuple[str, ...] = ()
    #: worker keys, kept apart from client keys so a leaked worker key cannot read results
    worker_keys: tuple[str, ...] = ()

    # Retention of finished jobs: 30 min for /run, 1 min for /runsync, as on RunPod.
    retention_run_s: float = 1800.0
    retention_sync_s: float = 60.0

    # Payload limits: RunPod's 10 MB for /run and 20 MB for /runsync bodies.
    max_run_body_bytes: int = 10 * MB
    max_runsync_body_bytes: int = 20 * MB
    max_result_body_bytes: int = 32 * MB

    # Long-poll hold times. Workers give up after 90 s, so holds stay well below that.
    job_take_hold_s: float = 20.0
    job_stop_hold_s: float = 30.0
    runsync_default_wait_ms: int = 90_000
    #: longest ?wait= accepted on status long-polls (our extension)
    status_max_wait_ms: int = 90_000

    # Liveness: a worker is lost after this long without contact; its jobs go back
    # to the queue up to max_retries times, then fail with "worker lost".
    worker_lost_s: float = 30.0
    max_retries: int = 1
    #: how often expired leases, timeouts, ttl and retention are swept
    sweep_interval_s: float = 0.5
    #: how often a long-poll re-reads the store for changes made by another process
    recheck_s: float = 0.5

    # Webhooks: 2 more attempts, 10 s apart; private targets refused by default.
    webhook_retries: int = 2
    webhook_retry_delay_s: float = 10.0
    webhook_timeout_s: float = 10.0
    webhook_allow_private: bool = False

    #: delay before a 401 on job-take, so a worker with a bad key cannot spin
    worker_auth_failure_delay_s: float = 2.0
    #: accept a worker id left as the literal `$RUNPOD_POD_ID` (a job-take template the SDK
    #: does not substitute), as the host alias `anon-<peer address>`. Off, such a request is
    #: refused with 400: workers sharing a host share that alias, so the fence cannot keep a
    #: zombie's late result from beating the current holder's
    anonymous_workers: bool = False
    #: "text" or "json"
    log_format: str = "text"
    log_level: str = "INFO"
    #: serve /metrics without the client key (for scrapers on a trusted network)
    metrics_public: bool = False
    #: how often the dashboard samples queue depth and throughput for its one-hour plots
    dashboard_sample_s: float = 10.0

    # The scaler inside `serve` (neuroq.scaler): starts and stops the workers of endpoints
    # configured with a handler or a command; other endpoints are plain queues.
    scaler: bool = True
    #: the server address the scaler's workers use; empty = this server's host and port
    scaler_url: str = ""
    #: how often the scaler looks at queues and workers; a cold start waits up to this long more
    scaler_interval_s: float = 0.5
    #: how long a stopped worker may take to finish its jobs before it is killed
    scaler_stop_grace_s: float = 30.0

    #: OpenAI-compatible routes answer 429 while this many jobs wait in the endpoint's queue, so
    #: clients back off (the OpenAI SDKs retry after Retry-After); 0 = no limit
    openai_max_queued: int = 0

    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `NEUROQ_<FIELD>` for each field, then apply non-None `overrides` (flags)."""
        env = dict(os.environ) if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(f"NEUROQ_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, getattr(cls(), f.name))
        settings = cls(**values)
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in clean:
            clean["data_dir"] = Path(clean["data_dir"])
        return replace(settings, **clean)


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, tuple):
            return _split_keys(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"NEUROQ_{name.upper()}={raw!r}: {exc}") from None
    return raw


# Handler settings: the job handler's own knobs (neuroq.handler), in the worker process.

#: warnings about handler settings go where the handler's own warnings go
_handler_log = logging.getLogger("neuroq.handler")


@dataclass(frozen=True)
class HandlerSettings:
    """How a handler process serves jobs, each field read from `NEUROQ_<FIELD>`. Its data
    directory is the server's `Settings.data_dir` (NEUROQ_DATA_DIR). An unusable tuning value
    (threads, precision, compile) warns and keeps its default: a worker should start and serve
    rather than fail every job over a performance knob."""

    #: a conversation session unused this long is forgotten
    session_ttl_s: float = 24 * 3600.0
    #: One, because a worker shares its cores with the server (`serve --worker`) and with other
    #: jobs: two threads contending with another busy process made batched decoding a quarter
    #: slower on 2 cores (bench_handler at concurrency 8: 48 vs 64 jobs/s), and a batch-1 decode
    #: step is as fast on one thread. Give a worker with cores of its own more, mainly for
    #: faster `train` jobs.
    torch_threads: int = 1
    #: the engines' decode-step weights: fp32 is exact (a request gets the same tokens alone or
    #: batched); fp16 and int8 are faster for large models, and replies may differ
    decode_precision: str = "fp32"
    #: compile the decode step; the first generate of each model architecture then waits for the
    #: compiler
    decode_compile: bool = False
    #: jobs at once under the RunPod SDK (its concurrency_modifier); `neuroq worker` takes
    #: --concurrency instead
    concurrency: int = 1
    #: under the RunPod SDK, serve as a generator with return_aggregate_stream, the form RunPod's
    #: OpenAI-compatible route expects (as worker-vllm does); other actions then output [result]
    generator: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HandlerSettings:
        """Read the NEUROQ_* variables; unset or blank ones keep the defaults."""
        env = os.environ if env is None else env
        default = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"NEUROQ_{f.name.upper()}")
            if raw is None or not raw.strip():
                continue
            if f.name == "torch_threads":
                values[f.name] = _thread_count(raw, default.torch_threads)
            elif f.name == "decode_precision":
                values[f.name] = _decode_precision(raw, default.decode_precision)
            elif f.name == "decode_compile":
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[f.name] = _parse(f.name, raw, getattr(default, f.name))
        return cls(**values)


def _thread_count(raw: str, default: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        _handler_log.warning(
            "NEUROQ_TORCH_THREADS=%r is not a positive integer; using %d", raw, default
        )
        return default
    return value


def _decode_precision(raw: str, default: str) -> str:
    # Imported here: the precisions belong to the model's decode step, and torch comes with it.
    from neuroq.model.decode import PRECISIONS

    value = raw.strip().lower()
    if value not in PRECISIONS:
        _handler_log.warning(
            "NEUROQ_DECODE_PRECISION=%r is not one of %s; using %s",
            raw,
            ", ".join(PRECISIONS),
            default,
        )
        return default
    return value
