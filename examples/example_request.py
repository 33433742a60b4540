"""The users' detailed example: health check, generate with the improved parameters, several
questions in one conversation, then train on a few texts and generate with the result.

Same connection settings as simple_request.py (local server by default, hosted RunPod through
NEUROQ_API_URL / RUNPOD_API_KEY / RUNPOD_ENDPOINT_ID).
"""

from __future__ import annotations

import sys
import uuid

from simple_request import send_and_wait

IMPROVED = {"max_length": 80, "temperature": 0.7, "top_k": 40, "top_p": 0.9}


def show(title: str, result: dict) -> bool:
    if "error" in result:
        print(f"{title}: エラー: {result['error']}")
        return False
    print(f"{title}: {result['output']}")
    return True


def main() -> int:
    ok = show("health", send_and_wait({"action": "health"}, timeout=60))
    ok &= show(
        "generate",
        send_and_wait(
            {"action": "generate", "prompt": "ChatGPTについて教えて", "repetition_penalty": 2.5}
            | IMPROVED
        ),
    )
    session = f"example-{uuid.uuid4().hex[:8]}"
    for question in ["こんにちは", "Pythonについて教えて", "ありがとう"]:
        result = send_and_wait(
            {"action": "generate", "prompt": question, "session_id": session} | IMPROVED
        )
        ok &= show(f"Q: {question}", result)
    send_and_wait({"action": "clear_session", "session_id": session})

    texts = [
        {"user": "量子コンピュータとは？", "assistant": "量子ビットを使って計算する機械です。"},
        {"user": "What is NeuroQ?", "assistant": "NeuroQ is a small language model."},
    ] * 20
    # A small model of its own, so training takes seconds and "default" stays as shipped.
    model = {"model": "example", "embed_dim": 32, "hidden_dim": 64, "num_layers": 1}
    ok &= show("init", send_and_wait({"action": "init"} | model))
    ok &= show(
        "train",
        send_and_wait({"action": "train", "model": "example", "texts": texts, "epochs": 3}),
    )
    ok &= show(
        "generate (trained)",
        send_and_wait({"action": "generate", "model": "example", "prompt": "What is NeuroQ?"}),
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
