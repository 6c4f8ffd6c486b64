"""The caching allocator simulation against counts derived by hand from the
rules of c10/cuda/CUDACachingAllocator.cpp, properties that hold for any
program, recorded GPU traces (tests/data/allocator/), and one model end to
end."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from attncost.memory.allocator import CachingAllocator
from attncost.memory.reserved import events_at, reserved_peak, runs_under, simulate

KiB, MiB = 1 << 10, 1 << 20
TRACES = sorted((Path(__file__).parent / "data" / "allocator").glob("*.json"))
MODELS = Path(__file__).parent / "models"


def allocs(*sizes, start=0):
    return [("alloc", start + i, s) for i, s in enumerate(sizes)]


# -- hand-worked scenarios ----------------------------------------------------

def test_small_requests_share_a_2mib_segment():
    # 600 KiB is a multiple of 512: three fill 1800 of a 2048 KiB segment
    run = simulate(allocs(600 * KiB, 600 * KiB, 600 * KiB))
    assert (run.reserved_peak_bytes, run.segments_peak) == (2 * MiB, 1)
    assert run.allocated_peak_bytes == 1800 * KiB
    # the 248 KiB left cannot hold a fourth: a second segment
    run = simulate(allocs(*[600 * KiB] * 4))
    assert (run.reserved_peak_bytes, run.segments_peak) == (4 * MiB, 2)


def test_small_requests_round_to_512_bytes():
    run = simulate(allocs(1, 513, 1000))
    assert run.allocated_peak_bytes == 512 + 1024 + 1024
    assert run.reserved_peak_bytes == 2 * MiB
    # 1 MiB then 1 MiB - 512 leave exactly kMinBlockSize: split off, and
    # enough for a 512-byte request in the same segment
    run = simulate(allocs(MiB, MiB - 512, 512))
    assert (run.reserved_peak_bytes, run.allocated_peak_bytes) == (2 * MiB, 2 * MiB)
    run = simulate(allocs(MiB, MiB - 512))
    assert run.allocated_peak_bytes == 2 * MiB - 512


def test_request_of_10mib_or_more_gets_a_segment_of_its_size():
    run = simulate(allocs(12 * MiB))
    assert (run.reserved_peak_bytes, run.allocated_peak_bytes, run.segments_peak) == \
        (12 * MiB, 12 * MiB, 1)
    # kMinLargeAlloc itself is not below kMinLargeAlloc: a 10 MiB segment
    assert simulate(allocs(10 * MiB)).reserved_peak_bytes == 10 * MiB
    assert simulate(allocs(10 * MiB - 512)).reserved_peak_bytes == 20 * MiB
    # 12 MiB + 1 byte: block 12 MiB + 512, segment rounded to 14 MiB, the
    # 2 MiB - 512 left is more than 1 MiB: split off and not counted
    run = simulate(allocs(12 * MiB + 1))
    assert (run.reserved_peak_bytes, run.allocated_peak_bytes) == (14 * MiB, 12 * MiB + 512)
    # 13.5 MiB: segment 14 MiB, 0.5 MiB left is not more than 1 MiB: not
    # split, the whole block counts as allocated
    run = simulate(allocs(13 * MiB + 512 * KiB))
    assert (run.reserved_peak_bytes, run.allocated_peak_bytes) == (14 * MiB, 14 * MiB)


def test_mid_requests_split_a_20mib_segment():
    run = simulate(allocs(5 * MiB))
    assert (run.reserved_peak_bytes, run.allocated_peak_bytes) == (20 * MiB, 5 * MiB)
    run = simulate(allocs(5 * MiB, 5 * MiB))
    assert (run.reserved_peak_bytes, run.segments_peak, run.allocated_peak_bytes) == \
        (20 * MiB, 1, 10 * MiB)
    # the fourth takes the last 5 MiB exactly; the fifth needs a new segment
    run = simulate(allocs(*[5 * MiB] * 4))
    assert (run.reserved_peak_bytes, run.segments_peak) == (20 * MiB, 1)
    run = simulate(allocs(*[5 * MiB] * 5))
    assert (run.reserved_peak_bytes, run.segments_peak) == (40 * MiB, 2)


def test_a_freed_block_is_reused_and_a_larger_request_reserves_anew():
    run = simulate(allocs(12 * MiB) + [("free", 0)] + allocs(12 * MiB, start=1))
    assert (run.reserved_peak_bytes, run.segments_peak) == (12 * MiB, 1)
    run = simulate(allocs(12 * MiB) + [("free", 0)] + allocs(14 * MiB, start=1))
    assert (run.reserved_peak_bytes, run.segments_peak) == (26 * MiB, 2)
    assert run.allocated_bytes == 14 * MiB


def test_best_fit_takes_the_smallest_free_block():
    # cached: a 12 MiB and a 16 MiB segment; 11 MiB takes the 12 MiB one
    # whole (1 MiB left is not more than kSmallSize), then 3 MiB splits the 16
    events = allocs(16 * MiB, 12 * MiB) + [("free", 0), ("free", 1)]
    run = simulate(events + allocs(11 * MiB, 3 * MiB, start=2))
    assert (run.reserved_peak_bytes, run.segments_peak) == (28 * MiB, 2)
    assert run.allocated_bytes == 12 * MiB + 3 * MiB
    # (taking the 16 MiB one would have split it: 11 + 3 MiB allocated)
    # equal sizes: the lower address first
    allocator = CachingAllocator()
    low, high = allocator.malloc(12 * MiB), allocator.malloc(12 * MiB)
    allocator.free(high)
    allocator.free(low)
    assert allocator.malloc(12 * MiB).addr == low.addr < high.addr


def test_freed_neighbours_merge():
    # four 5 MiB blocks fill a 20 MiB segment; freeing the middle two makes
    # one 10 MiB block, which holds a 9 MiB request (alone, neither would)
    events = allocs(*[5 * MiB] * 4) + [("free", 1), ("free", 2)] + allocs(9 * MiB, start=4)
    run = simulate(events)
    assert (run.reserved_peak_bytes, run.segments_peak) == (20 * MiB, 1)
    # freeing the first and third leaves two apart: the 9 MiB needs a segment
    events = allocs(*[5 * MiB] * 4) + [("free", 0), ("free", 2)] + allocs(9 * MiB, start=4)
    assert simulate(events).reserved_peak_bytes == 40 * MiB


def test_fragmentation_runs_out_where_allocated_bytes_fit():
    # live: two 5 MiB blocks in a 20 MiB segment with two 5 MiB holes; a 12
    # MiB request needs a segment: 20 + 12 > 30 MiB, and the split segment
    # cannot be released, although 10 + 12 MiB allocated would fit
    events = allocs(*[5 * MiB] * 4) + [("free", 0), ("free", 2)] + allocs(12 * MiB, start=4)
    run = simulate(events, limit=30 * MiB)
    assert run.oom and run.oom_event == len(events) - 1
    assert run.allocated_bytes == 10 * MiB and run.reserved_bytes == 20 * MiB
    assert not simulate(events, limit=32 * MiB).oom


def test_cached_segments_are_released_before_running_out():
    # a cached 12 MiB segment; 20 MiB more would pass 30 MiB: the cache is
    # released and the request retried
    events = allocs(12 * MiB) + [("free", 0)] + allocs(20 * MiB, start=1)
    assert simulate(events).reserved_peak_bytes == 32 * MiB
    run = simulate(events, limit=30 * MiB)
    assert not run.oom
    assert (run.reserved_peak_bytes, run.reserved_bytes, run.segments) == \
        (20 * MiB, 20 * MiB, 1)


def test_max_split_size_keeps_oversize_blocks_whole():
    # max_split_size 16 MiB: a cached 32 MiB block is not split for 12 MiB
    events = allocs(32 * MiB) + [("free", 0)] + allocs(12 * MiB, start=1)
    assert simulate(events).reserved_peak_bytes == 32 * MiB
    run = simulate(events, max_split_size=16 * MiB)
    assert run.reserved_peak_bytes == 44 * MiB
    # under 40 MiB the oversize block is released first
    run = simulate(events, max_split_size=16 * MiB, limit=40 * MiB)
    assert not run.oom and run.reserved_bytes == 12 * MiB
    # cached: 32 MiB (oversize) and 12 MiB; 14 MiB under 50 MiB: 44 + 14 is
    # too much, the smallest oversize block of at least max_split_size goes
    # (release_available_cached_blocks), the 12 MiB one stays cached
    events = allocs(32 * MiB, 12 * MiB) + [("free", 0), ("free", 1)] + allocs(14 * MiB, start=2)
    run = simulate(events, max_split_size=16 * MiB, limit=50 * MiB)
    assert (run.oom, run.reserved_bytes, run.segments) == (False, 26 * MiB, 2)


def test_expandable_segment_grows_by_pages():
    # the large pool maps 20 MiB pages: one 12 MiB request maps one page
    assert simulate(allocs(12 * MiB), expandable_segments=True).reserved_peak_bytes == 20 * MiB
    # five 12 MiB blocks packed: 60 MiB, three pages, one segment
    run = simulate(allocs(*[12 * MiB] * 5), expandable_segments=True)
    assert (run.reserved_peak_bytes, run.segments_peak) == (60 * MiB, 1)
    # small requests map 2 MiB pages
    run = simulate(allocs(*[600 * KiB] * 4), expandable_segments=True)
    assert run.reserved_peak_bytes == 4 * MiB


def test_expandable_segment_reuses_the_tail_of_a_page():
    # 4 MiB then 5 MiB: 9 MiB in one 20 MiB page (by default, two requests
    # of 1-10 MiB share a 20 MiB segment too)
    run = simulate(allocs(4 * MiB, 5 * MiB), expandable_segments=True)
    assert run.reserved_peak_bytes == 20 * MiB
    # 12 MiB freed then 14 MiB: the free 12 MiB grows into the page's tail
    events = allocs(12 * MiB) + [("free", 0)] + allocs(14 * MiB, start=1)
    assert simulate(events, expandable_segments=True).reserved_peak_bytes == 20 * MiB
    assert simulate(events).reserved_peak_bytes == 26 * MiB


def test_expandable_best_fit_counts_what_a_block_can_grow_to():
    # one 20 MiB page: 6 | 2 | 8 MiB live, a 4 MiB free tail; the 6 MiB freed
    allocator = CachingAllocator(expandable_segments=True)
    first, _, _ = (allocator.malloc(s * MiB) for s in (6, 2, 8))
    start = first.addr
    allocator.free(first)
    # 4 MiB: the tail is the smallest fit, but it can grow into the unmapped
    # space; the 6 MiB block cannot grow: it is taken
    assert allocator.malloc(4 * MiB).addr == start
    # so 6 MiB finds no block: the tail grows by a page
    allocator.malloc(6 * MiB)
    assert allocator.reserved == 40 * MiB


def test_expandable_empty_cache_unmaps_free_pages():
    allocator = CachingAllocator(expandable_segments=True)
    blocks = [allocator.malloc(12 * MiB) for _ in range(5)]
    allocator.free(blocks[4])      # bytes 48-60 MiB: page 40-60 keeps 40-48 live
    allocator.free(blocks[3])      # 36-60 MiB free: still no whole page but 40-60
    allocator.empty_cache()
    assert allocator.reserved == 40 * MiB and allocator.allocated == 36 * MiB


def test_expandable_limit_is_checked_against_the_segment_size():
    # as alloc_block does: reserved + get_allocation_size (22 MiB) <= 30 MiB
    # passes, then two 20 MiB pages are mapped for 21 MiB
    run = simulate(allocs(21 * MiB), expandable_segments=True, limit=30 * MiB)
    assert not run.oom and run.reserved_peak_bytes == 40 * MiB


# -- properties ---------------------------------------------------------------

SIZES = st.one_of(st.integers(1, 1 * MiB), st.integers(1 * MiB + 1, 10 * MiB),
                  st.integers(10 * MiB, 64 * MiB))
#: (free?, size or which live block)
STEPS = st.lists(st.tuples(st.booleans(), SIZES), max_size=60)


def program(steps):
    """Events from steps: a free takes a live block chosen by the size drawn."""
    events, live, key = [], [], 0
    for is_free, value in steps:
        if is_free and live:
            events.append(("free", live.pop(value % len(live))))
        else:
            events.append(("alloc", key, value))
            live.append(key)
            key += 1
    return events


def replay(allocator, events, check):
    live = {}
    for event in events:
        if event[0] == "alloc":
            live[event[1]] = allocator.malloc(event[2])
            if live[event[1]] is None:
                return live, True
        else:
            allocator.free(live.pop(event[1]))
        check(allocator, live)
    return live, False


@settings(derandomize=True, max_examples=200, deadline=None)
@given(STEPS, st.booleans(), st.one_of(st.none(), st.integers(2 * MiB, 200 * MiB)))
def test_reserved_covers_allocated_blocks_that_never_overlap(steps, expandable, limit):
    def check(allocator, live):
        assert allocator.reserved >= allocator.allocated == sum(b.size for b in live.values())
        # every reserved byte is in a live block or a cached free one
        cached = sum(entry[0] for pool in allocator.pools for entry in pool.free)
        assert allocator.allocated + cached == allocator.reserved
        spans = sorted((b.addr, b.addr + b.size) for b in live.values())
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    replay(CachingAllocator(limit, expandable), program(steps), check)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(STEPS, st.booleans())
def test_freeing_everything_keeps_the_cache(steps, expandable):
    events = program(steps)
    live = {e[1] for e in events if e[0] == "alloc"} - {e[1] for e in events if e[0] == "free"}
    before = simulate(events, expandable_segments=expandable)
    after = simulate(events + [("free", k) for k in live], expandable_segments=expandable)
    assert after.allocated_bytes == 0
    assert (after.reserved_bytes, after.segments) == (before.reserved_bytes, before.segments)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(STEPS, st.integers(2 * MiB, 200 * MiB))
def test_reserved_stays_under_the_limit(steps, limit):
    events = program(steps)
    run = simulate(events, limit=limit)
    assert run.reserved_peak_bytes <= limit
    free = simulate(events)
    if limit >= free.reserved_peak_bytes:  # never pressed: the same run
        assert run == free
    if run.oom:  # with the cache released, the request's segment passes the limit
        size = rounded(events[run.oom_event][2])
        segment = 2 * MiB if size <= MiB else 20 * MiB if size < 10 * MiB else pages(size, 2 * MiB)
        assert run.reserved_bytes + segment > limit
    # expandable segments may map up to a page past the limit (the check is
    # on get_allocation_size, the pages mapped may be more)
    run = simulate(events, limit=limit, expandable_segments=True)
    assert run.reserved_peak_bytes < limit + 20 * MiB


def rounded(nbytes):
    return max(512, -(-nbytes // 512) * 512)


def pages(nbytes, page):
    return -(-nbytes // page) * page


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.lists(SIZES, max_size=40))
def test_expandable_growth_maps_the_pages_the_blocks_need(sizes):
    # only allocations: blocks pack from the start of each pool's segment,
    # so the pages mapped are the rounded bytes rounded up to a page
    small = sum(rounded(s) for s in sizes if rounded(s) <= MiB)
    large = sum(rounded(s) for s in sizes if rounded(s) > MiB)
    run = simulate(allocs(*sizes), expandable_segments=True)
    assert run.reserved_peak_bytes == pages(small, 2 * MiB) + pages(large, 20 * MiB)
    assert run.allocated_peak_bytes == small + large
    # so at most a page per pool above what the default reserves: not
    # always less (one 12 MiB request: 20 MiB against 12 MiB)
    assert run.reserved_peak_bytes < simulate(allocs(*sizes)).reserved_peak_bytes + 22 * MiB


# -- recorded traces ----------------------------------------------------------

def recorded(trace: dict):
    """Events and the recorded reserved peak and segment peak of a
    torch.cuda.memory._snapshot() device trace."""
    events, reserved, segments, peaks = [], 0, 0, [0, 0]
    sign = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}
    for entry in trace["device_traces"][0]:
        action = entry["action"]
        if action == "alloc":
            events.append(("alloc", entry["addr"], entry["size"]))
        elif action == "free_completed":
            events.append(("free", entry["addr"]))
        elif action in sign:
            reserved += sign[action] * entry["size"]
            segments += sign[action] if action in ("segment_alloc", "segment_free") else 0
            peaks = [max(peaks[0], reserved), max(peaks[1], segments)]
    return events, peaks


@pytest.mark.skipif(not TRACES, reason="no recorded traces in tests/data/allocator/ "
                    "(benchmarks/record_allocator_trace.py records one on a GPU)")
@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_recorded_trace_replays_exactly(path):
    trace = json.loads(path.read_text())
    events, (reserved, segments) = recorded(trace)
    expandable = bool(trace.get("expandable_segments"))
    run = simulate(events, expandable_segments=expandable,
                   max_split_size=trace.get("max_split_size"))
    assert run.reserved_peak_bytes == reserved
    if not expandable:
        assert run.segments_peak == segments
    if "max_memory_reserved" in trace:
        assert run.reserved_peak_bytes == trace["max_memory_reserved"]
    if "max_memory_allocated" in trace:
        assert run.allocated_peak_bytes == trace["max_memory_allocated"]


# -- a model end to end -------------------------------------------------------

_ANALYSES: dict = {}


def analysed(name: str):
    """One analysis per model file for this module (a buffer in nanogpt_buffer)."""
    if name not in _ANALYSES:
        import attncost
        _ANALYSES[name] = attncost.analyze(MODELS / name, seq_len=128, device="cuda")
    return _ANALYSES[name]


@pytest.fixture
def analysis():
    return analysed("mha_causal.py")


@pytest.mark.parametrize("name, n, b", [("mha_causal.py", 128, 1), ("mha_causal.py", 300, 2),
                                        ("nanogpt_buffer.py", 64, 1),
                                        ("nanogpt_buffer.py", 48, 2)])
def test_events_carry_the_memory_models_peak(name, n, b):
    analysis = analysed(name)
    # live bytes over the events peak where the memory model says
    events, sizes, live, peak = events_at(analysis.memory, n, b), {}, 0, 0
    for event in events:
        if event[0] == "alloc":
            sizes[event[1]] = event[2]
            live += event[2]
            peak = max(peak, live)
        else:
            live -= sizes.pop(event[1])
    assert peak == analysis.at(analysis.peak_memory_bytes, n, b)
    # requests of at most 1 MiB or whole 2 MiB multiples take their rounded
    # size exactly: the allocated peak is the rounded live bytes' peak
    assert all(s <= MiB or s % (2 * MiB) == 0 for s in sizes.values() if s)
    sizes, live, rounded_peak = {}, 0, 0
    for event in events:
        if event[0] == "alloc":
            sizes[event[1]] = rounded(event[2]) if event[2] else 0
            live += sizes[event[1]]
            rounded_peak = max(rounded_peak, live)
        else:
            live -= sizes.pop(event[1])
    run = simulate(events)
    assert run.allocated_peak_bytes == rounded_peak
    assert reserved_peak(analysis.memory, n, b) == run.reserved_peak_bytes >= rounded_peak


def test_runs_under_a_limit_has_one_boundary(analysis):
    n, b = 1024, 1
    run = simulate(events_at(analysis.memory, n, b))
    top, bottom = run.reserved_peak_bytes, run.allocated_peak_bytes
    assert top >= analysis.at(analysis.peak_memory_bytes, n, b)
    assert runs_under(analysis.memory, n, b, top)
    assert not runs_under(analysis.memory, n, b, bottom - 1)
    limits = [bottom + (top - bottom) * k // 16 for k in range(17)]
    fits = [runs_under(analysis.memory, n, b, limit) for limit in limits]
    assert fits == sorted(fits)      # False ... False True ... True
    expandable = reserved_peak(analysis.memory, n, b, expandable_segments=True)
    assert expandable >= bottom
