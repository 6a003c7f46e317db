"""One lock per charge point, held only while used (``domain.keyed_locks``)."""

from __future__ import annotations

import asyncio

from domain.keyed_locks import KeyedLocks


async def test_a_keys_holders_take_turns_and_the_lock_is_forgotten_after() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(name: str, key: str) -> None:
        async with locks.one_at_a_time(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    holding = asyncio.gather(hold("a", "CP-1"), hold("b", "CP-1"), hold("c", "CP-2"))
    await asyncio.sleep(0)  # all three at their lock
    assert (locks.users("CP-1"), locks.users("CP-2"), locks.users("CP-3")) == (2, 1, 0)
    await holding
    assert order.index("a out") < order.index("b in")  # one at a time per key
    assert order.index("c in") < order.index("a out")  # other keys do not wait
    assert len(locks) == 0  # none kept for a charger nobody is arriving as
