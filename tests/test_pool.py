"""The address-pool allocator: free pairs, handed out under a lock."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from cove import pool
from cove.errors import CoveError
from cove.model import HostConfig


def _allocate(args: tuple[str, str]) -> tuple[str, str]:
    state, name = args
    return pool.allocate(HostConfig(state_dir=state), name)


def test_twenty_concurrent_allocations_get_twenty_pairs(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(20)]
    with ProcessPoolExecutor(8) as workers:
        pairs = list(workers.map(_allocate, [(str(tmp_path), n) for n in names]))
    assert len(set(pairs)) == 20
    assert all(h.startswith("10.233.") and h.endswith(".1") for h, _ in pairs)
    assert all(local.endswith(".2") for _, local in pairs)
    assert pool.allocations(HostConfig(state_dir=str(tmp_path))) == dict(
        zip(names, pairs, strict=True)
    )


def test_allocation_is_stable_avoids_taken_and_is_released(tmp_path: Path) -> None:
    host = HostConfig(state_dir=str(tmp_path), address_pool="10.50.0.0/22")
    assert pool.allocate(host, "a") == ("10.50.0.1", "10.50.0.2")
    assert pool.allocate(host, "a") == ("10.50.0.1", "10.50.0.2")
    # 10.50.1.2 is declared by some container: the next pair skips that /24
    assert pool.allocate(host, "b", taken=["10.50.1.2/24"]) == ("10.50.2.1", "10.50.2.2")
    pool.release(host, "a")
    assert pool.allocate(host, "c") == ("10.50.0.1", "10.50.0.2")
    assert pool.allocate(host, "d") == ("10.50.1.1", "10.50.1.2")  # nobody declares it now
    assert pool.allocate(host, "e") == ("10.50.3.1", "10.50.3.2")
    with pytest.raises(CoveError, match="no free address pair left in 10.50.0.0/22"):
        pool.allocate(host, "f")
