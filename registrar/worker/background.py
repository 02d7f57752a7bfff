"""Helpers for the worker's background loops (qualify, reg-event, trunks)."""
import asyncio


async def cancel(task) -> None:
    """Cancel a loop task and wait until it has stopped; its own failure is not ours to raise at stop."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
