"""The users' guide script: send one generate job and wait for the answer.

Local server by default (http://127.0.0.1:8000/v2, endpoint "neuroq", key from the data dir's
api_key file); hosted RunPod when NEUROQ_API_URL, RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID say so:

    NEUROQ_API_URL=https://api.runpod.ai/v2 RUNPOD_API_KEY=... RUNPOD_ENDPOINT_ID=... \\
        python examples/simple_request.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from neuroq.client import send_and_wait as _send_and_wait

DEFAULT_URL = "http://127.0.0.1:8000/v2"


def settings() -> tuple[str, str, str | None]:
    """(base URL, endpoint id, API key) from the environment, with local defaults."""
    url = os.environ.get("NEUROQ_API_URL", DEFAULT_URL)
    endpoint = os.environ.get("RUNPOD_ENDPOINT_ID", "neuroq")
    key = os.environ.get("RUNPOD_API_KEY")
    if not key:
        key_file = Path(os.environ.get("NEUROQ_DATA_DIR", ".neuroq")) / "api_key"
        key = key_file.read_text().strip() if key_file.is_file() else None
    return url, endpoint, key


def send_and_wait(input_data: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """{"output": ...} when the job completed, {"error": ...} otherwise (as in the guide)."""
    url, endpoint, key = settings()
    return _send_and_wait(input_data, timeout, endpoint_id=endpoint, api_key=key, base_url=url)


def main() -> int:
    result = send_and_wait(
        {
            "action": "generate",
            "mode": "layered",
            "prompt": "ChatGPTについて教えて",
            "max_length": 80,
            "temperature": 0.7,
            "repetition_penalty": 2.5,
        }
    )
    if "output" in result:
        print(result["output"]["generated"])
        return 0
    print(f"エラー: {result['error']}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
