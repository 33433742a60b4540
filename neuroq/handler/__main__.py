"""`python -m neuroq.handler`: serve the handler with RunPod's official SDK.

The SDK reads its server addresses from RUNPOD_WEBHOOK_* variables (hosted RunPod sets them; for
a NeuroQ server, `neuroq worker-env --endpoint ID` prints them). Without them the SDK would fall
back to a local test mode, so this prints how to run the handler instead.
"""

from __future__ import annotations

import os
import sys

USAGE = """\
RUNPOD_WEBHOOK_GET_JOB is not set, so there is no job server to take work from.

Run the NeuroQ handler in one of these ways:
  neuroq worker neuroq.handler:handler --url http://127.0.0.1:8000 --endpoint neuroq
  eval "$(neuroq worker-env --endpoint neuroq)" && python -m neuroq.handler
  (on hosted RunPod the platform sets the RUNPOD_WEBHOOK_* variables itself)
"""


def main() -> int:
    if not os.environ.get("RUNPOD_WEBHOOK_GET_JOB"):
        sys.stderr.write(USAGE)
        return 2
    import runpod

    from neuroq.config import HandlerSettings
    from neuroq.handler import RunPodRuntime, make_generator_handler, make_handler

    settings = HandlerSettings.from_env()
    if settings.generator:  # NEUROQ_GENERATOR=1: the form RunPod's OpenAI route expects
        handler: object = make_generator_handler(RunPodRuntime(), settings)
    else:
        handler = make_handler(RunPodRuntime(), settings)
    runpod.serverless.start(
        {
            "handler": handler,
            # Several jobs at once let the micro-batcher share forward passes between them.
            "concurrency_modifier": lambda current: settings.concurrency,
            "return_aggregate_stream": settings.generator,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
