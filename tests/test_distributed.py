"""``all_gather_rows`` under a real process group (gloo, 2 processes): unequal and empty parts."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from objmtl.distributed import all_gather_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, rows: list[int], queue: mp.Queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(rows))
    try:
        mine = torch.arange(rows[rank] * 3, dtype=torch.float32).view(rows[rank], 3) + 100 * rank
        labels = torch.full((rows[rank],), rank, dtype=torch.long)
        queue.put((rank, all_gather_rows(mine), all_gather_rows(labels)))
    finally:
        dist.destroy_process_group()


def test_all_gather_rows_concatenates_unequal_and_empty_parts_in_rank_order() -> None:
    assert torch.equal(all_gather_rows(torch.ones(2, 3)), torch.ones(2, 3))  # outside DDP: itself
    rows = [3, 0]  # rank 1 holds no rows
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, rows, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, feats, labels = queue.get(timeout=120)
        results[rank] = (feats, labels)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    want = torch.arange(9, dtype=torch.float32).view(3, 3)
    for rank in range(2):
        feats, labels = results[rank]
        assert torch.equal(feats, want), (rank, feats)
        assert labels.tolist() == [0, 0, 0]
