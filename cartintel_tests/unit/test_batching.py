"""The service's dynamic batching: concurrent requests share one scoring call, each gets its own
result, a batch never exceeds its bound, and a failed batch fails only its own requests."""

from __future__ import annotations

import asyncio

import pytest

from cartintel_assets.serving.batching import Batcher


def test_concurrent_requests_are_scored_together_in_order() -> None:
    calls: list[list[int]] = []

    def score(batch: list[int]) -> list[int]:
        calls.append(batch)
        return [10 * x for x in batch]

    async def run() -> list[int]:
        batcher: Batcher[int, int] = Batcher(score, max_batch=4, gather_turns=2)
        batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))
        finally:
            batcher.stop()

    assert asyncio.run(run()) == [10 * i for i in range(10)]
    assert [len(c) for c in calls] == [4, 4, 2]  # not ten calls of one, never more than 4
    assert [x for c in calls for x in c] == list(range(10))


def test_a_failed_batch_fails_its_requests_and_the_next_batch_is_scored() -> None:
    def score(batch: list[int]) -> list[int]:
        if 0 in batch:
            raise ValueError("bad batch")
        return batch

    async def run() -> tuple[list[BaseException | int], int]:
        batcher: Batcher[int, int] = Batcher(score, max_batch=8, gather_turns=2)
        batcher.start()
        try:
            first = await asyncio.gather(
                *(batcher.submit(i) for i in range(3)), return_exceptions=True
            )
            return list(first), await batcher.submit(7)
        finally:
            batcher.stop()

    first, later = asyncio.run(run())
    assert all(isinstance(e, ValueError) for e in first) and len(first) == 3
    assert later == 7


def test_submitting_before_start_is_an_error() -> None:
    batcher: Batcher[int, int] = Batcher(lambda b: b, max_batch=2, gather_turns=0)
    with pytest.raises(AssertionError, match="has not started"):
        asyncio.run(batcher.submit(1))
