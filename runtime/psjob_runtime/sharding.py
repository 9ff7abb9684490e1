"""How the flat parameter vector is split across the servers.

The split ignores tensor boundaries on purpose: a model with one huge embedding and many small
layers would leave one server hot if whole tensors were placed. Contiguous slices of the flat
vector whose lengths differ by at most one element give every server the same bytes to move and
the same optimizer work, and let a worker send each slice as one view of its flat buffer, with no
copy.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Slice:
    """Elements [start, stop) of the flat parameter vector, held by one server."""

    server: int
    start: int
    stop: int

    @property
    def numel(self) -> int:
        return self.stop - self.start


def balanced_slices(total: int, num_servers: int) -> tuple[Slice, ...]:
    """Split `total` elements into `num_servers` contiguous slices as even as possible."""
    if num_servers < 1:
        raise ValueError(f"num_servers must be >= 1, got {num_servers}")
    if total < num_servers:
        raise ValueError(
            f"the model has {total} parameter elements, fewer than the {num_servers} servers: "
            "use fewer servers"
        )
    base, extra = divmod(total, num_servers)
    slices = []
    start = 0
    for server in range(num_servers):
        stop = start + base + (1 if server < extra else 0)
        slices.append(Slice(server, start, stop))
        start = stop
    return tuple(slices)
