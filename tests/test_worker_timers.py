"""runsip's one timer for the core's transactions, under the event loop it really runs on (uvloop)."""
import asyncio
import time
import types

import uvloop

from registrar.worker.server import SipWorker


def test_a_timer_already_due_does_not_break_the_next_scheduling_under_uvloop():
    # uvloop's call_later(0, ...) returns a plain Handle, which has no when(): asking it
    # raised in every callback that scheduled the tick again (a call's lookup, under load).
    async def scenario():
        worker = SipWorker.__new__(SipWorker)
        worker.loop = asyncio.get_running_loop()
        worker.core = types.SimpleNamespace(next_deadline=lambda: time.time() - 1)
        worker._ticker, worker._ticker_due = None, 0.0
        worker._schedule_tick()
        first = worker._ticker
        worker._schedule_tick()  # already due no later: kept
        assert worker._ticker is first
        worker.core.next_deadline = lambda: time.time() + 60
        worker._schedule_tick()  # later than the one pending: kept too
        assert worker._ticker is first
        first.cancel()

    uvloop.run(scenario())
