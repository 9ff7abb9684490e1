"""Deterministic pseudo-random numbers keyed by integers, computed only for the keys asked for.

An embedding row's initial value must not depend on how many servers hold the table (results
with 1, 2 or 3 servers agree, and a checkpoint re-sliced to another server count stays valid),
and no server should generate a whole 10-million-row table to keep its share. A counter-based
hash of (salt, key) gives both: any process computes any row's values alone. The same hash
draws the CTR example's hidden model, so data generators need no stored table either.
"""

import torch

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 values; torch's >> is arithmetic."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(keys: torch.Tensor, salt: int) -> torch.Tensor:
    """splitmix64's finaliser of key + salt: well-spread int64 values (wrapping arithmetic)."""
    x = keys.to(torch.int64) * _GOLDEN + (salt * 0x2545F4914F6CDD1D) % (1 << 61)
    x = (x ^ shift_right(x, 30)) * _MIX1
    x = (x ^ shift_right(x, 27)) * _MIX2
    return x ^ shift_right(x, 31)


def uniform(keys: torch.Tensor, salt: int) -> torch.Tensor:
    """float32 values in [0, 1), one per key, the same in every process for the same inputs."""
    return shift_right(mix64(keys, salt), 40).to(torch.float32) * (1.0 / (1 << 24))


def normal(keys: torch.Tensor, salt: int) -> torch.Tensor:
    """Standard normal float32 values per key (Box-Muller on two independent hashes)."""
    u1 = uniform(keys, salt * 2 + 1).clamp_min(1e-7)
    u2 = uniform(keys, salt * 2 + 2)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
