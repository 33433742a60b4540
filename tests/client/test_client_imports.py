"""The client is what people install to submit jobs: it must import without the model's and
the server's dependencies, even though it shares `neuroq.jobs` and the HTTP layer with them."""

from __future__ import annotations

import subprocess
import sys

#: the `model` extra and what only the server needs
NOT_NEEDED = ["torch", "numpy", "safetensors", "sentencepiece", "starlette", "uvicorn",
              "prometheus_client", "psycopg"]  # fmt: skip

PROBE = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_NEEDED!r}:
            raise ImportError("not installed: " + name)

sys.meta_path.insert(0, Refuse())
from neuroq import AsyncEndpoint, Endpoint, JobStatus, send_and_wait
import neuroq.client, neuroq.http_client, neuroq.http_retry
"""


def test_the_client_imports_without_torch_or_the_server() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
