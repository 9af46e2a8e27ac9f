"""plan-memory's best fit finds each buffer's conflicts by stretch of positions
(passes/lowering/plan_memory.py): the same offsets as comparing with every placed buffer."""

from __future__ import annotations

import random

import pytest

from passes.lowering.plan_memory import _align, assign_offsets


def _every_buffer(sizes, intervals):
    """The best fit as it read every placed buffer for each new one."""
    placed, offsets = [], {}
    for key in sorted(sizes, key=lambda k: (-sizes[k], intervals[k])):
        size, (start, end) = _align(sizes[key]), intervals[key]
        conflicts = sorted((o, s) for o, s, (a, b) in placed if not (b < start or end < a))
        offset, best = 0, None
        for other_offset, other_size in conflicts:
            gap = other_offset - offset
            if gap >= size and (best is None or gap < best[1]):
                best = (offset, gap)
            offset = max(offset, other_offset + other_size)
        offsets[key] = best[0] if best else offset
        placed.append((offsets[key], size, (start, end)))
    return offsets, max((o + s for o, s, _ in placed), default=0)


@pytest.mark.parametrize("seed", range(8))
def test_same_offsets_as_reading_every_buffer(seed):
    rng = random.Random(seed)
    count = 400
    sizes, intervals = {}, {}
    for key in range(count):
        start = rng.randrange(1000)
        length = rng.choice([0, 1, 2, 5, 30, 200, 900])  # short-lived mostly, some across buckets
        sizes[key] = rng.choice([64, 100, 4096, 1 << 16, rng.randrange(1, 1 << 20)])
        intervals[key] = (start, start + length)
    assert assign_offsets(sizes, intervals) == _every_buffer(sizes, intervals)
