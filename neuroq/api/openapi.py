"""The OpenAPI 3.1 description of the client API, served at /openapi.json.

Written by hand rather than derived from the handlers, so it states the wire contract
(docs/api.md) and a fuzzer can hold the server to it: tests run schemathesis over this document
and expect no 5xx and no reply that breaks the schemas below. Keep it in step with
client_routes.py, job_list.py, job_logs.py, openai_routes.py, endpoint_routes.py, metrics.py and
schemas.py; tests/api/test_openapi.py fails on a route the app serves that is missing here. Not
described: the worker protocol (docs/worker-protocol.md, the SDK's), the dashboard's pages and
their `/ui/` calls (session cookie, not an API), and this document and its `/docs` page.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from neuroq.endpoints import (
    MAX_CONCURRENCY,
    MAX_IDLE_TIMEOUT_S,
    MAX_SCALER_VALUE,
    MAX_WORKERS,
    ScalerType,
)
from neuroq.input_schema import MAX_PROPERTIES, MAX_SCHEMA_BYTES, TYPES
from neuroq.jobs import (
    EXECUTION_TIMEOUT_MAX_MS,
    EXECUTION_TIMEOUT_MIN_MS,
    TTL_MAX_MS,
    TTL_MIN_MS,
    JobStatus,
)

Schema = dict[str, Any]

_ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"
_MAX_MS = 999_999_999_999


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> Schema:
    return {"description": description, "content": _json(_ref("Error"))}


def _ok(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": _json(schema)}


def _path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": _ID_PATTERN},
    }


def _ms_query(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_MS},
    }


_ENDPOINT = _path_param("endpoint_id", "Queue name; any id of A-Z a-z 0-9 _ - names a queue.")
_JOB = _path_param("job_id", "Job id as returned by run or runsync.")
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeating a key on the same endpoint returns the job first submitted with it "
    "(same id) while that job is retained. Surrounding whitespace is ignored.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}

_COMMON_ERRORS = {
    "401": _error("Missing or invalid API key."),
    "404": _error("Unknown job, or an endpoint id that is not path-safe."),
    "default": _error("Any other error; the body is always JSON."),
}


def _operation(
    summary: str,
    operation_id: str,
    params: list[Schema],
    ok: Schema,
    *,
    body: Schema | None = None,
    extra_errors: dict[str, Schema] | None = None,
    errors: dict[str, Schema] | None = None,
) -> Schema:
    """One operation; `errors` replaces the job API's common error replies (OpenAI's differ)."""
    common = _COMMON_ERRORS if errors is None else errors
    op: Schema = {
        "summary": summary,
        "operationId": operation_id,
        "parameters": params,
        "responses": {"200": ok, **common, **(extra_errors or {})},
    }
    if body is not None:
        op["requestBody"] = body
    return op


def _submit_body(limit: str) -> Schema:
    return {
        "required": True,
        "description": f"The job. Bodies over {limit} are refused with 413.",
        "content": _json(_ref("SubmitRequest")),
    }


_BAD_REQUEST = {"400": _error("Invalid body or parameter; the message names the field.")}
_TOO_LARGE = {"413": _error("Body over the size limit.")}


def _job_links() -> Schema:
    """How a submitted job's id feeds the per-job operations (lets fuzzers follow real jobs)."""
    params = {"endpoint_id": "$request.path.endpoint_id", "job_id": "$response.body#/id"}
    targets = {
        "status": "GetStatus",
        "statusPost": "PostStatus",
        "statusSync": "GetStatusSync",
        "statusSyncPost": "PostStatusSync",
        "stream": "ReadStream",
        "streamPost": "PostStream",
        "cancel": "Cancel",
        "retry": "Retry",
        "jobLogs": "Logs",
    }
    return {name: {"operationId": op, "parameters": params} for op, name in targets.items()}


_WARNING_HEADER = {
    "X-NeuroQ-Warning": {
        "description": "Present when no worker has ever served the endpoint (a misspelt id, or "
        "no worker started yet): the job waits until one attaches.",
        "schema": {"type": "string"},
    }
}


def _submitted(description: str) -> Schema:
    return {
        **_ok(description, _ref("StatusObject")),
        "headers": _WARNING_HEADER,
        "links": _job_links(),
    }


def _job_list_op() -> Schema:
    """`GET /v2/jobs` (neuroq.api.job_list): not under an endpoint, so no endpoint parameter."""
    params: list[Schema] = [
        {
            "name": "endpoint",
            "in": "query",
            "required": False,
            "description": "Only this endpoint's jobs; every endpoint's when absent.",
            "schema": {"type": "string", "pattern": _ID_PATTERN},
        },
        {
            "name": "status",
            "in": "query",
            "required": False,
            "description": "Only jobs in this state.",
            "schema": {"type": "string", "enum": [s.value for s in JobStatus]},
        },
        _ms_query("since", "Only jobs created at or after this time (ms since the epoch)."),
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Page size (default 50).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "Jobs to skip, newest first (default 0); use nextOffset.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
        },
    ]
    return _operation(
        "List retained jobs, newest first (no inputs or outputs)",
        "listJobs",
        params,
        _ok("One page of job summaries.", _ref("JobList")),
        extra_errors=_BAD_REQUEST,
    )


def _paths() -> Schema:
    ep = "/v2/{endpoint_id}"
    status_ok = _ok("The job's status object.", _ref("StatusObject"))
    wait_status = _ms_query(
        "wait",
        "Hold the reply until the job ends or its progress output changes (a worker taking "
        "the job does not end the hold), at most this many ms (capped by the server's "
        "status_max_wait_ms). 0 or absent: answer at once.",
    )
    ttl = _ms_query("ttl", "Keep the finished record at most this many ms from now.")
    status_op = _operation(
        "Job status",
        "status",
        [_ENDPOINT, _JOB, wait_status, ttl],
        status_ok,
        extra_errors=_BAD_REQUEST,
    )
    status_sync_op = _operation(
        "Job status, held until the job ends",
        "statusSync",
        [
            _ENDPOINT,
            _JOB,
            _ms_query("wait", "Longest hold in ms, clamped to 1000..status_max_wait_ms."),
        ],
        status_ok,
        extra_errors=_BAD_REQUEST,
    )
    stream_ok = {
        "description": "New stream chunks. JSON: a consuming read (each chunk is returned "
        "once). With `Accept: text/event-stream`: one event per chunk (`id:` is its sequence "
        "number; resume with Last-Event-ID), then an `event: status` with the status object.",
        "content": {
            "application/json": {"schema": _ref("StreamResponse")},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    stream_params = [
        _ENDPOINT,
        _JOB,
        _ms_query("wait", "JSON form: hold until a new chunk arrives or the job ends, in ms."),
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "Event-stream form: resume after this chunk sequence number.",
            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        },
    ]
    stream_op = _operation(
        "Read stream chunks", "stream", stream_params, stream_ok, extra_errors=_BAD_REQUEST
    )
    return {
        "/v2/jobs": {"get": _job_list_op()},
        f"{ep}/run": {
            "post": _operation(
                "Queue a job",
                "run",
                [_ENDPOINT, _IDEMPOTENCY],
                _submitted("The queued job: id and status IN_QUEUE."),
                body=_submit_body("10 MB"),
                extra_errors={**_BAD_REQUEST, **_TOO_LARGE},
            )
        },
        f"{ep}/runsync": {
            "post": _operation(
                "Queue a job and wait for its result",
                "runsync",
                [
                    _ENDPOINT,
                    _IDEMPOTENCY,
                    _ms_query(
                        "wait",
                        "Longest hold in ms (default 90000), clamped to 1000..300000. A job "
                        "still running then is returned as IN_QUEUE or IN_PROGRESS.",
                    ),
                ],
                _submitted("The status object, terminal if the job ended in time."),
                body=_submit_body("20 MB"),
                extra_errors={**_BAD_REQUEST, **_TOO_LARGE},
            )
        },
        f"{ep}/status/{{job_id}}": {"get": status_op, "post": _renamed(status_op, "statusPost")},
        f"{ep}/status-sync/{{job_id}}": {
            "get": status_sync_op,
            "post": _renamed(status_sync_op, "statusSyncPost"),
        },
        f"{ep}/stream/{{job_id}}": {"get": stream_op, "post": _renamed(stream_op, "streamPost")},
        f"{ep}/cancel/{{job_id}}": {
            "post": _operation(
                "Cancel a job (a finished job is returned unchanged)",
                "cancel",
                [_ENDPOINT, _JOB],
                status_ok,
            )
        },
        f"{ep}/retry/{{job_id}}": {
            "post": _operation(
                "Queue a FAILED or TIMED_OUT job again under the same id",
                "retry",
                [_ENDPOINT, _JOB],
                status_ok,
                extra_errors={"400": _error("The job is not FAILED or TIMED_OUT.")},
            )
        },
        f"{ep}/purge-queue": {
            "post": _operation(
                "Cancel every queued job of the endpoint",
                "purgeQueue",
                [_ENDPOINT],
                _ok("How many jobs were removed.", _ref("PurgeResponse")),
            )
        },
        f"{ep}/health": {
            "get": _operation(
                "Job and worker counts",
                "health",
                [_ENDPOINT],
                _ok("Counts; every key is always present.", _ref("Health")),
            )
        },
        f"{ep}/logs/{{job_id}}": {"get": _logs_op()},
        **_openai_paths(),
        **_endpoint_paths(),
    }


def _logs_op() -> Schema:
    """`GET /v2/{ep}/logs/{job_id}` (neuroq.api.job_logs): a job's captured log lines."""
    params = [
        _ENDPOINT,
        _JOB,
        {
            "name": "after",
            "in": "query",
            "required": False,
            "description": "Only lines after this seq (default 0); pass nextAfter to follow.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Most lines in one reply (default 1000).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 5_000},
        },
    ]
    return _operation(
        "A job's captured log lines, oldest first",
        "jobLogs",
        params,
        _ok("Lines after `after`.", _ref("JobLogs")),
        extra_errors=_BAD_REQUEST,
    )


# -- OpenAI-compatible routes (neuroq.api.openai_routes) -----------------------------------------


def _openai_error(description: str) -> Schema:
    return {"description": description, "content": _json(_ref("OpenAIError"))}


_OPENAI_ERRORS = {
    "400": _openai_error("Invalid body; `param` names the field."),
    "401": _openai_error("Missing or invalid API key."),
    "404": _openai_error("An endpoint id that is not path-safe, or the worker's unknown model."),
    "413": _openai_error("Body over the runsync size limit."),
    "429": _openai_error("The endpoint's queue holds openai_max_queued jobs; see Retry-After."),
    "500": _openai_error("The job failed, was cancelled or was deleted."),
    "502": _openai_error("The worker answered with no OpenAI response object or stream."),
    "503": _openai_error(
        "The store is unavailable, or the server is stopping (code server_stopping): retry "
        "after Retry-After."
    ),
    "504": _openai_error("The job ran past its executionTimeout."),
    "default": _openai_error("Any other error, in OpenAI's shape."),
}
_REQUEST_ID = {
    "x-request-id": {
        "description": "The id of the job serving the request.",
        "schema": {"type": "string"},
    }
}


def _openai_completion(summary: str, operation_id: str, request: str) -> Schema:
    ok = {
        "description": "Without `stream`: the worker's response object once the job ends. With "
        "`stream: true`: every chunk as `data: {chunk}`, ending with `data: [DONE]` (or an "
        "error event).",
        "headers": _REQUEST_ID,
        "content": {
            "application/json": {"schema": _ref("OpenAIObject")},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    body = {
        "required": True,
        "description": "OpenAI's request; only what every worker needs is checked here.",
        "content": _json(_ref(request)),
    }
    return _operation(summary, operation_id, [_ENDPOINT], ok, body=body, errors=_OPENAI_ERRORS)


def _openai_paths() -> Schema:
    base = "/v2/{endpoint_id}/openai/v1"
    models_ok = {
        "description": "The worker's model list.",
        "headers": _REQUEST_ID,
        "content": _json(_ref("OpenAIObject")),
    }
    return {
        f"{base}/chat/completions": {
            "post": _openai_completion(
                "OpenAI chat completion, served as a job", "chatCompletions", "ChatRequest"
            )
        },
        f"{base}/completions": {
            "post": _openai_completion(
                "OpenAI text completion, served as a job", "completions", "CompletionRequest"
            )
        },
        f"{base}/models": {
            "get": _operation(
                "The models the endpoint's worker serves",
                "listModels",
                [_ENDPOINT],
                models_ok,
                errors=_OPENAI_ERRORS,
            )
        },
    }


# -- endpoint settings and the scaler's view (neuroq.api.endpoint_routes), /metrics ---------------


_SETTINGS_ERROR = {
    "400": {
        "description": "A bad body or setting; `field` names the setting.",
        "content": _json(_ref("SettingsError")),
    }
}
_NOT_CONFIGURED = {"404": _error("The endpoint is not configured (it is a plain queue).")}


def _endpoint_paths() -> Schema:
    ep = "/endpoints/{endpoint_id}"
    settings = _ok("The endpoint's settings.", _ref("EndpointSettings"))

    def settings_body(schema: str, description: str) -> Schema:
        return {"required": True, "description": description, "content": _json(_ref(schema))}

    put = _operation(
        "Create or replace an endpoint's settings",
        "putEndpoint",
        [_ENDPOINT],
        {**settings, "description": "Replaced."},
        body=settings_body("EndpointSettingsNew", "Missing keys take their defaults."),
        extra_errors={
            **_SETTINGS_ERROR,
            **_TOO_LARGE,
            "201": {**settings, "description": "Created."},
        },
    )
    register_ok = _ok("The worker, shown as initializing.", _ref("RegisteredWorker"))
    register = _operation(
        "Show a starting worker as initializing (what a scaler does; the worker key)",
        "registerWorker",
        [_ENDPOINT, _path_param("worker_id", "The new worker's id.")],
        register_ok,
        extra_errors={"400": _error("A worker id that is not path-safe.")},
    )
    register["security"] = [{"workerKey": []}]
    metrics_op = _operation(
        "Prometheus metrics of the whole server (client key unless metrics are public)",
        "metrics",
        [],
        {
            "description": "Prometheus text exposition.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    )
    return {
        "/endpoints": {
            "get": _operation(
                "Every configured endpoint's settings",
                "listEndpoints",
                [],
                _ok("The settings, one object per endpoint.", _ref("EndpointList")),
            )
        },
        ep: {
            "get": _operation(
                "An endpoint's settings",
                "getEndpoint",
                [_ENDPOINT],
                settings,
                extra_errors=_NOT_CONFIGURED,
            ),
            "put": put,
            "patch": _operation(
                "Change the given settings of a configured endpoint",
                "patchEndpoint",
                [_ENDPOINT],
                settings,
                body=settings_body("EndpointSettingsChange", "Only the settings to change."),
                extra_errors={**_SETTINGS_ERROR, **_TOO_LARGE, **_NOT_CONFIGURED},
            ),
            "delete": _operation(
                "Forget an endpoint's settings (its jobs stay, a plain queue)",
                "deleteEndpoint",
                [_ENDPOINT],
                _ok("Which endpoint was forgotten.", _ref("Deleted")),
                extra_errors=_NOT_CONFIGURED,
            ),
        },
        f"{ep}/metrics": {
            "get": _operation(
                "The scaler's inputs and decision (KEDA metrics-api; public with metrics)",
                "endpointMetrics",
                [_ENDPOINT],
                _ok("The endpoint's figures.", _ref("EndpointReport")),
            )
        },
        f"{ep}/workers": {
            "get": _operation(
                "The endpoint's live workers",
                "endpointWorkers",
                [_ENDPOINT],
                _ok("One object per worker.", _ref("WorkerList")),
            )
        },
        f"{ep}/workers/{{worker_id}}": {"post": register},
        "/metrics": {"get": metrics_op},
    }


def _renamed(operation: Schema, operation_id: str) -> Schema:
    renamed = copy.deepcopy(operation)
    renamed["operationId"] = operation_id
    return renamed


def _counts(*names: str) -> Schema:
    return {
        "type": "object",
        "required": list(names),
        "properties": {name: {"type": "integer", "minimum": 0} for name in names},
    }


def _schemas() -> Schema:
    ms = {"type": "integer", "minimum": 0}
    url = {"type": ["string", "null"], "format": "uri", "maxLength": 2048}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Policy": {
            "type": ["object", "null"],
            "description": "Unknown keys are ignored.",
            "properties": {
                "executionTimeout": {
                    "type": ["integer", "null"],
                    "minimum": EXECUTION_TIMEOUT_MIN_MS,
                    "maximum": EXECUTION_TIMEOUT_MAX_MS,
                    "description": "Longest run in ms, counted from pick-up.",
                },
                "ttl": {
                    "type": ["integer", "null"],
                    "minimum": TTL_MIN_MS,
                    "maximum": TTL_MAX_MS,
                    "description": "Total life in ms, counted from submission.",
                },
                "lowPriority": {
                    "type": ["boolean", "null"],
                    "description": "Taken only when no normal-priority job is queued.",
                },
            },
        },
        "SubmitRequest": {
            "type": "object",
            "required": ["input"],
            "description": "Unknown top-level keys are ignored.",
            "properties": {
                "input": {"description": "Any JSON value, passed to the handler unchanged."},
                "webhook": {**url, "description": "http(s) URL that receives the final status."},
                "webhookV2": {**url, "description": "Accepted like webhook."},
                "policy": _ref("Policy"),
                "s3Config": {
                    "type": ["object", "null"],
                    "description": "Passed to the worker, never echoed back.",
                },
            },
        },
        "StatusObject": {
            "type": "object",
            "required": ["id", "status"],
            "properties": {
                "id": {"type": "string", "pattern": _ID_PATTERN},
                "status": {"type": "string", "enum": [s.value for s in JobStatus]},
                "delayTime": {**ms, "description": "ms from submission to pick-up"},
                "executionTime": {**ms, "description": "ms from pick-up to the end"},
                "workerId": {"type": "string"},
                "output": {"description": "Handler result, or the latest progress value."},
                "error": {"description": "Error reported by the worker or set by the server."},
                "retries": {"type": "integer", "minimum": 1},
            },
        },
        "StreamResponse": {
            "type": "object",
            "required": ["status", "stream"],
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in JobStatus]},
                "stream": {
                    "type": "array",
                    "items": {"description": "A chunk as the worker posted it: {output: ...}"},
                },
            },
        },
        "PurgeResponse": {
            "type": "object",
            "required": ["removed", "status"],
            "properties": {
                "removed": {"type": "integer", "minimum": 0},
                "status": {"type": "string", "const": "completed"},
            },
        },
        "JobSummary": {
            "type": "object",
            "required": ["id", "endpointId", "status", "createdAt", "retries"],
            "properties": {
                "id": {"type": "string"},
                "endpointId": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in JobStatus]},
                "createdAt": {**ms, "description": "ms since the epoch"},
                "startedAt": {"type": ["integer", "null"], "minimum": 0},
                "finishedAt": {"type": ["integer", "null"], "minimum": 0},
                "delayTime": {"type": ["integer", "null"], "minimum": 0},
                "executionTime": {"type": ["integer", "null"], "minimum": 0},
                "workerId": {"type": ["string", "null"]},
                "retries": {"type": "integer", "minimum": 0},
                "error": {
                    "type": ["string", "null"],
                    "description": "The error, cut to 300 characters; status has all of it.",
                },
            },
        },
        "JobList": {
            "type": "object",
            "required": ["jobs", "limit", "offset", "nextOffset"],
            "properties": {
                "jobs": {"type": "array", "items": _ref("JobSummary")},
                "limit": {"type": "integer", "minimum": 1},
                "offset": {"type": "integer", "minimum": 0},
                "nextOffset": {
                    "type": ["integer", "null"],
                    "description": "The offset of the next page; null on the last one.",
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["jobs", "workers"],
            "properties": {
                "jobs": _counts("completed", "failed", "inProgress", "inQueue", "retried"),
                "workers": _counts(
                    "idle", "initializing", "ready", "running", "throttled", "unhealthy"
                ),
            },
        },
    }


def _settings_schemas() -> Schema:
    """Endpoint settings (neuroq.endpoints), as read and as written."""
    count = {"type": "integer", "minimum": 0, "maximum": MAX_WORKERS}
    settable: Schema = {
        "handler": {
            "type": ["string", "null"],
            "pattern": ":",
            "description": "MODULE:FUNCTION or FILE.py:FUNCTION for `neuroq worker`.",
        },
        "command": {
            "type": ["array", "null"],
            "minItems": 1,
            "items": {"type": "string", "minLength": 1},
            "description": "An external worker's argv; not with handler.",
        },
        "workersMin": {**count, "description": "At most workersMax."},
        "workersMax": count,
        "workersSpare": {
            **count,
            "description": "Idle workers kept started beyond the busy ones; at most workersMax.",
        },
        "idleTimeout": {"type": "integer", "minimum": 0, "maximum": MAX_IDLE_TIMEOUT_S},
        "scalerType": {"type": "string", "enum": [t.value for t in ScalerType]},
        "scalerValue": {"type": "integer", "minimum": 1, "maximum": MAX_SCALER_VALUE},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
        "executionTimeout": {
            "type": ["integer", "null"],
            "minimum": EXECUTION_TIMEOUT_MIN_MS,
            "maximum": EXECUTION_TIMEOUT_MAX_MS,
            "description": "Default executionTimeout (ms) of the endpoint's jobs.",
        },
        "env": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": "string"},
        },
        "inputSchema": {
            "type": ["object", "null"],
            "description": "What a job's input holds, for the dashboard's JSON request form: a"
            " JSON Schema object whose properties each have a type (string, number, integer,"
            " boolean, array, object) and optionally enum, default, description, title,"
            " minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength; and"
            f" required. Other keywords are kept and ignored. At most {MAX_PROPERTIES}"
            f" properties and {MAX_SCHEMA_BYTES} bytes as JSON. Job inputs are not checked"
            " against it.",
            "properties": {
                "type": {"const": "object"},
                "properties": {
                    "type": "object",
                    "maxProperties": MAX_PROPERTIES,
                    "additionalProperties": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": list(TYPES)}},
                    },
                },
                "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            },
        },
    }
    name = {"type": "string", "pattern": _ID_PATTERN}
    stamp = {"type": "integer", "minimum": 0, "description": "ms since the epoch"}
    stored = {"name": name, **settable, "createdAt": stamp, "updatedAt": stamp}
    return {
        "EndpointSettings": {"type": "object", "required": list(stored), "properties": stored},
        "EndpointSettingsNew": {
            "type": "object",
            "description": "Unknown and read-only keys are refused (400 naming the key).",
            "properties": {"name": {**name, "description": "If given, the path's id."}, **settable},
            "additionalProperties": False,
        },
        "EndpointSettingsChange": {
            "type": "object",
            "description": "Unknown and read-only keys are refused (400 naming the key).",
            "properties": settable,
            "additionalProperties": False,
        },
        "EndpointList": {
            "type": "object",
            "required": ["endpoints"],
            "properties": {"endpoints": {"type": "array", "items": _ref("EndpointSettings")}},
        },
        "SettingsError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "field": {"type": "string", "description": "The setting refused."},
            },
        },
        "Deleted": {
            "type": "object",
            "required": ["deleted"],
            "properties": {"deleted": name},
        },
    }


def _scaler_schemas() -> Schema:
    """The scaler's view of an endpoint (neuroq.scaler.source.endpoint_report), its workers."""
    n = {"type": "integer", "minimum": 0}
    state = {"type": "string", "enum": ["initializing", "ready", "unhealthy", "recycling"]}
    report: Schema = {
        "endpoint": {"type": "string"},
        "configured": {"type": "boolean"},
        "queued": n,
        "running": n,
        "jobs": {**n, "description": "queued + running"},
        "oldestQueuedAt": {"type": ["integer", "null"], "minimum": 0},
        "oldestQueueDelaySeconds": {"type": "number", "minimum": 0},
        "workers": n,
        "busyWorkers": n,
        "desiredWorkers": {**n, "description": "What the scaler rule asks for now."},
        "workersMin": n,
        "workersMax": n,
        "workersSpare": n,
        "scalerType": {"type": "string", "enum": [t.value for t in ScalerType]},
        "scalerValue": {"type": "integer", "minimum": 1},
    }
    worker = {
        "type": "object",
        "required": ["id", "state", "jobs", "lastSeen"],
        "properties": {
            "id": {"type": "string"},
            "state": state,
            "jobs": {"type": "array", "items": {"type": "string"}},
            "lastSeen": {**n, "description": "ms since the epoch"},
        },
    }
    return {
        "EndpointReport": {"type": "object", "required": list(report), "properties": report},
        "WorkerList": {
            "type": "object",
            "required": ["workers"],
            "properties": {"workers": {"type": "array", "items": worker}},
        },
        "RegisteredWorker": {
            "type": "object",
            "required": ["id", "state"],
            "properties": {"id": {"type": "string"}, "state": {"const": "initializing"}},
        },
    }


def _openai_schemas() -> Schema:
    """OpenAI's shapes, only as far as the server itself checks or makes them."""
    model = {"type": "string", "minLength": 1, "description": "See /models."}
    stream = {"type": ["boolean", "null"], "description": "Reply as server-sent events."}
    hint = "Any other OpenAI parameter is passed to the worker, which judges it."
    return {
        "ChatRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "description": hint,
            "properties": {
                "model": model,
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "object", "description": "{role, content}"},
                },
                "stream": stream,
            },
        },
        "CompletionRequest": {
            "type": "object",
            "required": ["model", "prompt"],
            "description": hint,
            "properties": {
                "model": model,
                "prompt": {"not": {"type": "null"}, "description": "Text or list of texts."},
                "stream": stream,
            },
        },
        "OpenAIObject": {
            "type": "object",
            "description": "The worker's OpenAI response object, passed on unchanged.",
        },
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "integer", "null"]},
                    },
                }
            },
        },
    }


def _logs_schema() -> Schema:
    line = {
        "type": "object",
        "required": ["seq", "attempt", "at", "level", "line"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "attempt": {"type": "integer", "minimum": 0},
            "at": {"type": "integer", "minimum": 0, "description": "ms since the epoch"},
            "level": {"type": "string", "description": "INFO, ERROR...; TRUNCATED marks a cut."},
            "line": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": ["id", "status", "lines", "truncated", "nextAfter"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in JobStatus]},
            "lines": {"type": "array", "items": line},
            "truncated": {"type": "boolean", "description": "An attempt dropped lines."},
            "nextAfter": {"type": "integer", "minimum": 0, "description": "`after` to follow."},
        },
    }


@cache
def _document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NeuroQ Serverless client API",
            "version": "1.0.0",
            "description": "RunPod Serverless compatible job API, its OpenAI routes, endpoint "
            "settings and metrics. Every reply is JSON, except event streams and /metrics.",
        },
        "paths": _paths(),
        "components": {
            "schemas": {
                **_schemas(),
                "JobLogs": _logs_schema(),
                **_openai_schemas(),
                **_settings_schemas(),
                **_scaler_schemas(),
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The client key; the bare key without 'Bearer' works too.",
                },
                "workerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A worker key, for registering a starting worker.",
                },
            },
        },
        "security": [{"bearer": []}],
    }


def openapi_document() -> Schema:
    """A fresh copy of the document (callers may not mutate the cached one)."""
    return copy.deepcopy(_document())
