"""The scaler: starts and stops an endpoint's worker processes by its settings, as RunPod's
endpoint settings do (workersMin, workersMax, idleTimeout, QUEUE_DELAY / REQUEST_COUNT).

    decide.py     the decision for one endpoint: a pure function of what was seen and the time
    source.py     what it decides on: the store (inside `serve`) or a server over HTTP
    processes.py  worker processes: argv and environment, sessions, pidfiles, stale ones ended
    scaler.py     the loop: observe, decide, start, drain, replace
    local.py      the scaler as a task of `neuroq serve`
    commands.py   `neuroq scaler` (against a remote server) and `neuroq endpoint ...`
"""
