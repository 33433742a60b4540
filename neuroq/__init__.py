"""NeuroQ Serverless: a self-hosted, RunPod-compatible asynchronous job service."""

from neuroq.jobs import TERMINAL, JobStatus

__all__ = ["TERMINAL", "JobStatus"]
