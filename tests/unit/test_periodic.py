import asyncio

from actors.periodic import Periodic


async def test_runs_repeatedly_and_survives_a_failing_tick() -> None:
    calls: list[int] = []

    async def job() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("store down for one tick")

    p = Periodic("test", 0.01, job)
    p.ensure_started()
    p.ensure_started()  # idempotent: one loop, not two
    await asyncio.sleep(0.08)
    assert len(calls) >= 4
    assert p._task is not None
    p._task.cancel()
