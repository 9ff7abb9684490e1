"""Servers get contiguous slices of equal size (within one element), whatever the tensor sizes."""

import itertools

import pytest
from psjob_runtime.sharding import balanced_slices


@pytest.mark.parametrize(("total", "servers"), [(10, 1), (10, 3), (1_199_882, 2), (7, 7)])
def test_slices_cover_everything_contiguously_and_evenly(total: int, servers: int) -> None:
    slices = balanced_slices(total, servers)
    assert [s.server for s in slices] == list(range(servers))
    assert slices[0].start == 0 and slices[-1].stop == total
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))
    sizes = [s.numel for s in slices]
    assert max(sizes) - min(sizes) <= 1


def test_more_servers_than_elements_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="use fewer servers"):
        balanced_slices(2, 3)
