"""DistributedDataParallel on 2 CPU processes (gloo): trains, ranks end with identical weights."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from kidneyseg.train.distributed import cleanup_distributed, init_distributed
    from kidneyseg.train.trainer import Trainer
    from tests.test_train_trainer import tiny_config, toy_source

    info = init_distributed("cpu")
    seen = []
    src = toy_source()

    def source(epoch, seed):
        seen.append(seed)
        return src(epoch, seed)

    t = Trainer(tiny_config(epochs=2), Path(out) / "stage", source, toy_source(base_seed=1), dist=info)
    t.fit()
    torch.save({"model": t.model.state_dict(), "seeds": seen}, Path(out) / f"rank{rank}.pt")
    cleanup_distributed()


def test_ddp_two_cpu_ranks_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2))
    assert r0["seeds"] != r1["seeds"], "each rank must draw its own patches"
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # rank 0 wrote the checkpoint, and it holds the trained (changed) weights
    from kidneyseg.model.checkpoint import load_checkpoint
    from kidneyseg.model.unet import build_unet
    from tests.test_train_trainer import tiny_config

    ck = load_checkpoint(tmp_path / "stage" / "checkpoint_last.pt")
    assert ck["epoch"] == 2
    torch.manual_seed(tiny_config().seed)
    init = build_unet(tiny_config().network).state_dict()
    changed = [k for k in init if not torch.equal(init[k], ck["model"][k])]
    assert changed and all(torch.equal(ck["model"][k], r0["model"][k]) for k in r0["model"])
