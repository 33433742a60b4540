#!/usr/bin/env bash
# Install, start the job server with a local NeuroQ worker on the embedded SQLite queue, run the
# users' example script end to end, then stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[model]'

export NEUROQ_DATA_DIR="${NEUROQ_DATA_DIR:-.neuroq}"
port="${NEUROQ_PORT:-8000}"
.venv/bin/neuroq serve --port "$port" --worker neuroq.handler:handler --endpoint neuroq &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
    if .venv/bin/python -c "import httpx,sys; httpx.get('http://127.0.0.1:$port/v2/neuroq/health', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$server" 2>/dev/null || { echo "the server exited; see the lines above" >&2; exit 1; }
    sleep 0.2
done

NEUROQ_API_URL="http://127.0.0.1:$port/v2" .venv/bin/python examples/simple_request.py
