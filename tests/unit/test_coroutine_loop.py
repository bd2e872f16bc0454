"""A dispatcher's shared event loop for coroutine runs
(``zcasync.coroutines.EventLoop``) on its own, without a dispatcher: its
thread survives what a job's code does to it, and a run handed to it as
it closes is refused, never silently lost."""
import asyncio
import contextvars
import queue as queuemodule
import sys

import pytest

from zcasync import coroutines

WAIT = 20


class FakeJob:
    """What a Step needs of its job."""

    def _raisedFailure(self):
        return sys.exc_info()[1]


def _exit():
    raise SystemExit(5)


async def killsTheLoop():
    """A coroutine whose callback raises SystemExit on the loop (asyncio
    lets SystemExit and KeyboardInterrupt out of run_forever)."""
    asyncio.get_running_loop().call_soon(_exit)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return 'survived'


async def plain():
    await asyncio.sleep(0)
    return 'plain'


def runOn(loop, awaitable):
    outcomes = queuemodule.Queue()

    def resume(outcome):
        outcomes.put(outcome)
        return None
    loop.run(coroutines.Step(FakeJob(), awaitable), resume,
             contextvars.copy_context())
    return outcomes


def test_the_loop_thread_survives_system_exit_raised_on_the_loop():
    loop = coroutines.EventLoop('test')
    try:
        assert runOn(loop, killsTheLoop()).get(timeout=WAIT) == 'survived'
        assert loop.thread.is_alive()
        assert runOn(loop, plain()).get(timeout=WAIT) == 'plain'
        assert loop.join(WAIT) == 0
    finally:
        loop.close()
    loop.thread.join(WAIT)
    assert not loop.thread.is_alive()  # a deliberate stop still stops it


def test_a_run_handed_over_while_the_loop_closes_is_refused():
    loop = coroutines.EventLoop('test')
    loop._ensure()
    ensure = loop._ensure

    def closingMeanwhile():
        running = ensure()
        loop.close()  # (another thread) between the check and the count
        return running
    loop._ensure = closingMeanwhile
    step = coroutines.Step(FakeJob(), plain())
    with pytest.raises(RuntimeError):
        loop.run(step, lambda outcome: None, contextvars.copy_context())
    step.close()
    assert loop.runs == 0
    loop.thread.join(WAIT)
    assert not loop.thread.is_alive()
