"""DaemonThreads: sync handlers reuse idle threads, run in parallel when they overlap, and idle
threads retire."""

from __future__ import annotations

import threading

from harness import wait_for

from neuroq.worker.threads import DaemonThreads


def run_and_wait(pool: DaemonThreads) -> str:
    done = threading.Event()
    names: list[str] = []

    def task() -> None:
        names.append(threading.current_thread().name)
        done.set()

    pool.submit(task)
    assert done.wait(5)
    return names[0]


def wait_idle(pool: DaemonThreads, count: int) -> None:
    wait_for(lambda: pool.idle, 5, f"{count} idle threads", 0.01, until=lambda n: n == count)


def test_one_after_another_reuse_one_daemon_thread() -> None:
    pool = DaemonThreads(name="t-reuse")
    first = run_and_wait(pool)
    wait_idle(pool, 1)
    names = {first}
    for _ in range(20):
        names.add(run_and_wait(pool))
        wait_idle(pool, 1)
    assert names == {first}
    thread = next(t for t in threading.enumerate() if t.name == first)
    assert thread.daemon


def test_overlapping_tasks_get_threads_of_their_own() -> None:
    pool = DaemonThreads(name="t-overlap")
    barrier = threading.Barrier(4, timeout=5)
    finished = threading.Semaphore(0)

    def task() -> None:
        barrier.wait()  # only passes if all four run at the same time
        finished.release()

    for _ in range(4):
        pool.submit(task)
    for _ in range(4):
        assert finished.acquire(timeout=5)
    wait_idle(pool, 4)


def test_idle_threads_retire_and_a_raising_task_does_not_kill_its_thread() -> None:
    pool = DaemonThreads(name="t-retire", idle_s=0.05)

    def boom() -> None:
        raise RuntimeError("handler bug")

    pool.submit(boom)
    run_and_wait(pool)  # the pool still serves after a task raised
    for _ in range(500):  # every thread retires once idle for idle_s
        if not any(t.name.startswith("t-retire-") for t in threading.enumerate()):
            break
        threading.Event().wait(0.01)
    else:
        raise AssertionError("idle threads did not retire")
    assert pool.idle == 0
    run_and_wait(pool)  # a new thread starts on demand
