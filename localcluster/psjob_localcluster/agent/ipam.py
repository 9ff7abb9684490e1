"""Give every pod its own loopback address, as a pod network gives it its own IP.

Any address in 127.0.0.0/8 can be bound without configuration. Each agent takes one
127.B.0.0/16 block (B chosen at random unless given), so that clusters started in parallel on
one machine rarely share addresses; freed addresses go to the back of the queue, so an address
is not reused while stale endpoints may still point at it.
"""

from __future__ import annotations

import random
import threading
from collections import deque


class LoopbackPool:
    """Addresses 127.B.x.y, x in 0..255, y in 2..254."""

    def __init__(self, block: int | None = None) -> None:
        if block is None:
            block = random.randint(2, 254)
        if not 1 <= block <= 254:
            raise ValueError(f"loopback block must be in 1..254, got {block}")
        self.block = block
        self._free = deque(f"127.{block}.{x}.{y}" for x in range(256) for y in range(2, 255))
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            if not self._free:
                raise RuntimeError(f"all pod addresses in 127.{self.block}.0.0/16 are in use")
            return self._free.popleft()

    def release(self, address: str) -> None:
        with self._lock:
            self._free.append(address)
