"""The SQL both durable stores run, and the dialect details that differ between them.

`queries.sql` holds every statement once, by name. `load_queries(dialect)` fills in the few
per-dialect macros and placeholder style and returns name -> SQL text, so `ops.py` can be written
once against names while each store only knows how to run a statement on its own driver.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from neuroq.jobs import Job, JobStatus, Policy

#: Columns a Job is built from, in the order `job_from_row` reads them; `seq` comes last.
JOB_COLUMNS = (
    "id, endpoint_id, status, input_json, execution_timeout_ms, ttl_ms, low_priority,"
    " created_at_ms, webhook, s3_config_json, sync, started_at_ms, finished_at_ms, worker_id,"
    " lease_expires_at_ms, output_json, error_json, retries, expires_at_ms, stop_pending,"
    " stream_cursor, seq"
)

_COMMON_MACROS = {
    "job": JOB_COLUMNS,
    "retained": "(expires_at_ms IS NULL OR expires_at_ms > :now)",
    "expires": ":now + COALESCE(retention_ms, CASE WHEN sync THEN :retention_sync"
    " ELSE :retention_run END)",
    # the fence of every worker write (neuroq.store.base.Holder): the poster holds the job under
    # its own id or its anonymous alias, in the named attempt; no :worker_id means any holder
    "held": "(CAST(:worker_id AS TEXT) IS NULL OR worker_id = :worker_id OR worker_id = :alias)"
    " AND (CAST(:attempt AS BIGINT) IS NULL OR retries = :attempt)",
}

_DIALECT_MACROS: dict[str, dict[str, str]] = {
    "sqlite": {
        # list parameters travel as JSON text (see SQLiteStore), unpacked by json_each
        "ids": "(SELECT value FROM json_each(:ids))",
        "lock": "",
        "skip_locked": "",
        "picked_seqs": "seq IN (SELECT seq FROM picked)",
        "log_rows": "(SELECT CAST(key AS INTEGER) AS i, json_extract(value, '$[0]') AS at_ms,"
        " json_extract(value, '$[1]') AS level, json_extract(value, '$[2]') AS line"
        " FROM json_each(:rows))",
        "result_rows": "(SELECT json_extract(value, '$[0]') AS r_id,"
        " json_extract(value, '$[1]') AS r_status, json_extract(value, '$[2]') AS r_output,"
        " json_extract(value, '$[3]') AS r_error, json_extract(value, '$[4]') AS r_attempt"
        " FROM json_each(:rows))",
    },
    "postgres": {
        "ids": "(SELECT unnest(CAST(:ids AS TEXT[])))",
        "lock": "FOR UPDATE",
        "skip_locked": "FOR UPDATE SKIP LOCKED",
        "picked_seqs": "seq = ANY (ARRAY(SELECT seq FROM picked))",
        "log_rows": "(SELECT CAST(e.ord AS BIGINT) - 1 AS i, CAST(e.value->>0 AS BIGINT) AS at_ms,"
        " e.value->>1 AS level, e.value->>2 AS line"
        " FROM jsonb_array_elements(CAST(:rows AS JSONB)) WITH ORDINALITY AS e(value, ord))",
        "result_rows": "(SELECT e->>0 AS r_id, e->>1 AS r_status, e->>2 AS r_output,"
        " e->>3 AS r_error, CAST(e->>4 AS BIGINT) AS r_attempt"
        " FROM jsonb_array_elements(CAST(:rows AS JSONB)) AS e)",
    },
}

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def read_sql(filename: str) -> str:
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


def parse_queries(text: str) -> dict[str, str]:
    """Split a named-query file into name -> statement (comments and trailing `;` removed)."""
    parts = _NAME_LINE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def load_queries(dialect: str) -> dict[str, str]:
    """The named queries with macros filled for `dialect` ("sqlite" or "postgres")."""
    macros = {**_COMMON_MACROS, **_DIALECT_MACROS[dialect]}
    queries = {}
    for name, sql in parse_queries(read_sql("queries.sql")).items():
        # macros hold `:params` too, so placeholders are converted after filling them
        filled = sql.format(**macros)
        if dialect == "postgres":
            filled = _PARAM.sub(r"%(\1)s", filled)
        queries[name] = filled
    return queries


def job_from_row(row: tuple[Any, ...] | Any) -> Job:
    """Build a Job from a row selected with `JOB_COLUMNS` (flags may be 0/1 or booleans)."""
    return Job(
        id=row[0],
        endpoint_id=row[1],
        status=JobStatus(row[2]),
        input_json=row[3],
        policy=Policy(execution_timeout_ms=row[4], ttl_ms=row[5], low_priority=bool(row[6])),
        created_at_ms=row[7],
        webhook=row[8],
        s3_config_json=row[9],
        sync=bool(row[10]),
        started_at_ms=row[11],
        finished_at_ms=row[12],
        worker_id=row[13],
        lease_expires_at_ms=row[14],
        output_json=row[15],
        error_json=row[16],
        retries=row[17],
        expires_at_ms=row[18],
        stop_pending=bool(row[19]),
        stream_cursor=row[20],
    )
