"""neuroq.store.base.Notifier: versioned topics, waits that wake on a publish or time out, and
no waiter left behind by a wait that ended any way (woken, timed out or cancelled)."""

from __future__ import annotations

import asyncio

from neuroq.store.base import Notifier, wait_until


async def test_a_wait_returns_at_once_when_the_topic_moved_since_the_read() -> None:
    notifier = Notifier()
    seen = notifier.version("t")
    notifier.publish("t")
    assert await notifier.wait("t", seen, timeout_s=60) is True


async def test_a_publish_wakes_every_waiter_of_its_topic_only() -> None:
    notifier = Notifier()
    waits = [asyncio.ensure_future(notifier.wait("t", 0, timeout_s=60)) for _ in range(3)]
    other = asyncio.ensure_future(notifier.wait("other", 0, timeout_s=60))
    await asyncio.sleep(0)  # all four are sleeping now
    notifier.publish("t")
    assert await asyncio.gather(*waits) == [True, True, True]
    assert not other.done()
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    assert notifier._waiters == {}


async def test_a_timed_out_wait_is_false_and_leaves_nothing_behind() -> None:
    notifier = Notifier()
    assert await notifier.wait("t", 0, timeout_s=0.01) is False
    assert notifier._waiters == {}
    assert notifier.version("t") == 0


async def test_a_cancelled_wait_leaves_nothing_behind_and_a_later_publish_is_fine() -> None:
    notifier = Notifier()
    wait = asyncio.ensure_future(notifier.wait("t", 0, timeout_s=60))
    await asyncio.sleep(0)
    wait.cancel()
    await asyncio.gather(wait, return_exceptions=True)
    assert wait.cancelled()
    assert notifier._waiters == {}
    notifier.publish("t")
    assert notifier.version("t") == 1


async def test_wait_until_rechecks_after_recheck_s_without_a_publish() -> None:
    """A change nobody published (another process, say) is still seen at the next re-check."""
    notifier = Notifier()
    state: list[str] = []

    async def check() -> str | None:
        return state[0] if state else None

    later = asyncio.get_running_loop().call_later(0.05, state.append, "changed")
    try:
        result = await wait_until(notifier, "t", check, timeout_s=5, recheck_s=0.02)
    finally:
        later.cancel()
    assert result == "changed"
