"""What the CUDA caching allocator reserves: PyTorch's CUDACachingAllocator
(c10/cuda/CUDACachingAllocator.cpp) replayed over a forward's allocations.

``max_memory_allocated`` counts live blocks; whether a forward runs out of
memory depends on what the allocator *reserves*: the segments it obtained
from the driver, larger than the live blocks because requests are rounded,
packed into segments and split, and freed blocks are cached, not returned.
The rules, with the source's names:

* ``round_size``: a request is rounded up to a multiple of kMinBlockSize
  (512 bytes); requests up to kSmallSize (1 MiB) use the small pool, larger
  ones the large pool (``get_pool``).
* ``get_free_block``: best fit, the smallest cached free block of the pool
  that is large enough, ties broken by address (a set ordered by stream,
  size, address).
* ``get_allocation_size``: with none, a new segment of kSmallBuffer (2 MiB)
  for a small request, kLargeBuffer (20 MiB) for one under kMinLargeAlloc
  (10 MiB), else the request rounded up to kRoundLarge (2 MiB).
* ``should_split``: the block is split when what remains is at least
  kMinBlockSize (small pool) or more than kSmallSize (large pool, and only
  for requests under ``max_split_size``, unlimited by default); a block not
  split is handed out, and counted by ``max_memory_allocated``, whole.
* ``free_block``: a freed block merges with free neighbours of its segment.
* ``malloc``: when no block fits and a new segment would pass the allowed
  memory, cached oversize blocks are released
  (``release_available_cached_blocks``, only with ``max_split_size`` set),
  then every cached segment with nothing allocated in it
  (``release_cached_blocks``), and the segment is tried again; then out of
  memory.
* ``expandable_segments:True``: one segment per pool that grows by mapping
  pages of kSmallBuffer (small pool) or kLargeBuffer (large pool) at its
  lowest free address (``try_allocate_expandable_block``, ``map_block``);
  every split keeps at least kMinBlockSize; releasing the cache unmaps the
  free whole pages (``unmap_block``).

Simplified: one stream and no cross-stream uses; a new segment lies above
every earlier one (the driver's addresses decide only ties between free
blocks of equal size); an expandable segment's address space is unbounded
(the source reserves 1.125 times the card's memory); ``limit`` is the
allowed memory of ``set_per_process_memory_fraction``, checked as the
source does (reserved + the segment it would create), which for expandable
segments is the request's ``get_allocation_size`` while the pages mapped
may be more, so reserved can pass the limit by less than a page.  Not
modelled: ``garbage_collection_threshold``, ``roundup_power2_divisions``,
CUDA graph pools.
"""
from __future__ import annotations

from bisect import bisect_left, insort

K_MIN_BLOCK_SIZE = 512            # kMinBlockSize
K_SMALL_SIZE = 1 << 20            # kSmallSize
K_SMALL_BUFFER = 2 << 20          # kSmallBuffer
K_LARGE_BUFFER = 20 << 20         # kLargeBuffer
K_MIN_LARGE_ALLOC = 10 << 20      # kMinLargeAlloc
K_ROUND_LARGE = 2 << 20           # kRoundLarge
#: An expandable segment's address space (bytes): more than any card holds.
_EXPANDABLE_SPACE = 1 << 50


def round_size(nbytes: int) -> int:
    """``round_size``: the block a request of ``nbytes`` takes."""
    return max(K_MIN_BLOCK_SIZE, -(-nbytes // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE)


def allocation_size(size: int) -> int:
    """``get_allocation_size``: the segment a rounded request creates."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


class Block:
    """A range of a segment: allocated, cached free, or (in an expandable
    segment, ``space`` = its (base address, page size)) not backed by memory."""

    __slots__ = ("addr", "size", "small", "allocated", "mapped", "prev", "next", "space")

    def __init__(self, addr: int, size: int, small: bool, space=None, mapped: bool = True):
        self.addr, self.size, self.small, self.space = addr, size, small, space
        self.allocated, self.mapped = False, mapped
        self.prev = self.next = None


class _Pool:
    """Cached free blocks ordered by (size, address); unmapped ranges by address."""

    def __init__(self, small: bool):
        self.small = small
        self.free: list[tuple] = []
        self.unmapped: list[tuple] = []

    def add(self, block: Block) -> None:
        insort(self.free if block.mapped else self.unmapped,
               (block.size, block.addr, block) if block.mapped else (block.addr, block))

    def drop(self, block: Block) -> None:
        if block.mapped:
            del self.free[bisect_left(self.free, (block.size, block.addr))]
        else:
            del self.unmapped[bisect_left(self.unmapped, (block.addr,))]


class _ExpandableSegments:
    """``expandable_segments:True``: segments that grow by pages at the lowest
    free address instead of new cudaMalloc'd segments (the allocator's
    ``ExpandableSegment``), mixed into CachingAllocator."""

    def _grow(self, pool: _Pool, size: int) -> Block:
        """``try_allocate_expandable_block``: map pages at the lowest address
        with room (a free block and the unmapped range after it)."""
        block = self._expandable_room(pool, size)
        if not block.mapped:
            self._map(block, min(block.size, size), pool)
        while block.size < size:
            after = block.next
            self._map(after, min(size - block.size, after.size), pool)
            block = after
        pool.drop(block)
        self._count_ranges()
        return block

    def _expandable_room(self, pool: _Pool, size: int) -> Block:
        """``find_expandable_block``."""
        for _, block in pool.unmapped:
            if block.prev is not None and not block.prev.allocated:
                block = block.prev
            room, b = 0, block
            while room < size and b is not None and not b.allocated:
                room, b = room + b.size, b.next
            if room >= size:
                return block
        space = (self._top, K_SMALL_BUFFER if pool.small else K_LARGE_BUFFER)  # base, page
        self._top += _EXPANDABLE_SPACE
        block = Block(self._top - _EXPANDABLE_SPACE, _EXPANDABLE_SPACE, pool.small, space,
                      mapped=False)
        pool.add(block)
        return block

    def _map(self, block: Block, size: int, pool: _Pool) -> None:
        """``map_block``: back the first ``size`` bytes of an unmapped block
        with whole pages; the block merges with free mapped neighbours."""
        page = block.space[1]
        mapped = -(-size // page) * page
        pool.drop(block)
        block.mapped = True
        if mapped < block.size:
            rest = Block(block.addr + mapped, block.size - mapped, block.small, block.space,
                         mapped=False)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = mapped
            pool.add(rest)
        self._merge(block, block.prev, pool)
        self._merge(block, block.next, pool)
        pool.add(block)
        self.reserved += mapped
        self.reserved_peak = max(self.reserved_peak, self.reserved)

    def _unmap(self, block: Block, pool: _Pool) -> None:
        """``unmap_block``: the whole pages of a free block are given back."""
        base, page = block.space
        begin = base + -(-(block.addr - base) // page) * page
        end = base + (block.addr + block.size - base) // page * page
        if begin >= end:
            return
        pool.drop(block)
        for lo, hi, after in ((block.addr, begin, False), (end, block.addr + block.size, True)):
            if hi > lo:     # the free mapped parts before and after the pages
                part = Block(lo, hi - lo, block.small, block.space)
                left, right = (block, block.next) if after else (block.prev, block)
                part.prev, part.next = left, right
                if left is not None:
                    left.next = part
                if right is not None:
                    right.prev = part
                pool.add(part)
        block.addr, block.size, block.mapped = begin, end - begin, False
        self._merge(block, block.prev, pool)
        self._merge(block, block.next, pool)
        pool.add(block)
        self.reserved -= end - begin

    def _count_ranges(self) -> None:
        """Segments of an expandable allocator: its contiguous mapped ranges,
        as ``snapshot()`` reports them."""
        count = 0
        for pool in self.pools:
            for _, block in pool.unmapped:
                if block.prev is not None:
                    count += 1       # the mapped range that ends here
        self.segments = count
        self.segments_peak = max(self.segments_peak, count)


class CachingAllocator(_ExpandableSegments):
    """One device's DeviceCachingAllocator on one stream: ``malloc`` and
    ``free`` as the source does them, with its statistics (bytes)."""

    def __init__(self, limit: int | None = None, expandable_segments: bool = False,
                 max_split_size: int | None = None):
        self.limit, self.expandable = limit, expandable_segments
        self.max_split = max_split_size if max_split_size is not None else float("inf")
        self.pools = (_Pool(True), _Pool(False))
        self.allocated = self.reserved = self.segments = 0
        self.allocated_peak = self.reserved_peak = self.segments_peak = 0
        self._top = 0        # the next segment's address

    def malloc(self, nbytes: int) -> Block | None:
        """The block for a request of ``nbytes`` (> 0), or None: out of memory."""
        size = round_size(nbytes)
        pool = self.pools[0] if size <= K_SMALL_SIZE else self.pools[1]
        alloc_size = allocation_size(size)
        block = self._free_block(pool, size)
        if block is None:
            block = self._new_block(pool, size, alloc_size)
            if block is None and self._release_oversize(pool, size):
                block = self._new_block(pool, size, alloc_size)
            if block is None:
                self.empty_cache()
                block = self._new_block(pool, size, alloc_size)
            if block is None:
                return None
        if self._should_split(block, size):
            block = self._split(block, size, pool)
        block.allocated = True
        self.allocated += block.size
        self.allocated_peak = max(self.allocated_peak, self.allocated)
        return block

    def free(self, block: Block) -> None:
        """``free_block``: back to the cache, merged with free neighbours."""
        block.allocated = False
        self.allocated -= block.size
        pool = self.pools[not block.small]
        self._merge(block, block.prev, pool)
        self._merge(block, block.next, pool)
        pool.add(block)

    def empty_cache(self) -> None:
        """``release_cached_blocks``: segments with nothing allocated go back
        to the driver; in expandable segments, free whole pages are unmapped."""
        for pool in (self.pools[1], self.pools[0]):
            to_unmap = []
            for _, _, block in list(pool.free):
                if block.space is not None:
                    to_unmap.append(block)
                elif block.prev is None and block.next is None:
                    pool.drop(block)
                    self.reserved -= block.size
                    self.segments -= 1
            for block in to_unmap:
                self._unmap(block, pool)
                if block.prev is None and block.next is None:
                    pool.drop(block)     # release_expandable_segment
        if self.expandable:
            self._count_ranges()

    def _free_block(self, pool: _Pool, size: int) -> Block | None:
        """``get_free_block``: best fit by (size, address)."""
        free = pool.free
        i = bisect_left(free, (size,))
        if i == len(free):
            return None
        # an expandable block fits by the size it can grow to (its unmapped tail)
        while (free[i][2].space is not None and i + 1 < len(free)
               and _growable(free[i + 1][2]) < _growable(free[i][2])):
            i += 1
        block = free[i][2]
        if size < self.max_split <= block.size:
            return None          # an oversize block is not split for a smaller request
        if size >= self.max_split and block.size >= size + K_LARGE_BUFFER:
            return None
        del free[i]
        return block

    def _new_block(self, pool: _Pool, size: int, alloc_size: int) -> Block | None:
        """``alloc_block``: a new segment, or, expandable, more pages mapped."""
        if self.limit is not None and self.reserved + alloc_size > self.limit:
            return None
        if self.expandable:
            return self._grow(pool, size)
        block = Block(self._top, alloc_size, pool.small)
        self._top += -(-alloc_size // K_SMALL_BUFFER) * K_SMALL_BUFFER
        self.reserved += alloc_size
        self.segments += 1
        self.reserved_peak = max(self.reserved_peak, self.reserved)
        self.segments_peak = max(self.segments_peak, self.segments)
        return block

    def _release_oversize(self, pool: _Pool, size: int) -> bool:
        """``release_available_cached_blocks``: with ``max_split_size`` set,
        the smallest cached oversize block that is enough, or the largest
        ones until enough is released."""
        if self.max_split == float("inf") or self.expandable:
            return False
        key = max(size, self.max_split)
        free = pool.free
        i = bisect_left(free, (key,))
        victims = [free[i][2]] if i < len(free) else []
        released = sum(b.size for b in victims)
        while not victims or (released < key and i > 0):
            i -= 1
            if i < 0 or free[i][2].size < self.max_split:
                break
            victims.append(free[i][2])
            released += free[i][2].size
        for block in victims:
            pool.drop(block)
            self.reserved -= block.size
            self.segments -= 1
        return released >= key

    def _should_split(self, block: Block, size: int) -> bool:
        remaining = block.size - size
        if block.small or self.expandable:
            return remaining >= K_MIN_BLOCK_SIZE
        return size < self.max_split and remaining > K_SMALL_SIZE

    def _split(self, rest: Block, size: int, pool: _Pool) -> Block:
        """``alloc_found_block``: the front ``size`` bytes; the rest stays cached."""
        block = Block(rest.addr, size, rest.small, rest.space)
        block.prev, block.next = rest.prev, rest
        if rest.prev is not None:
            rest.prev.next = block
        rest.prev = block
        rest.addr += size
        rest.size -= size
        pool.add(rest)
        return block

    def _merge(self, dst: Block, src: Block | None, pool: _Pool) -> None:
        """``try_merge_blocks``: ``dst`` takes in a free neighbour in the same state."""
        if src is None or src.allocated or src.mapped != dst.mapped:
            return
        pool.drop(src)
        if dst.prev is src:
            dst.addr, dst.prev = src.addr, src.prev
            if dst.prev is not None:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size


def _growable(block: Block) -> int:
    """A free block's size with the unmapped range right after it."""
    after = block.next
    return block.size + (after.size if after is not None and not after.mapped else 0)
