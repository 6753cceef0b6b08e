"""Run by torchrun from test_distributed.py: train a tiny GHN or final network on this rank and write this
rank's trained parameters to OUT/params.rank<r>.pt, so the test can check that DDP kept the
ranks in step and compare them with a single-process computation.

    torchrun --standalone --nproc_per_node 2 python_tests/distributed_worker.py {ghn|final} CONFIG.json OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ghn_ext.core.distributed import distributed_run
from ghn_ext.workflows.final import FinalConfig, FinalTrainer
from ghn_ext.core.graph import ArchGraph
from ghn_ext.workflows.train import TrainConfig, Trainer


def main(kind: str, config_path: str, out: str) -> None:
    spec = json.loads(Path(config_path).read_text())
    with distributed_run("cpu") as ctx:
        if kind == "ghn":
            trainer = Trainer(TrainConfig.from_dict(spec["config"]), out, ctx)
            trainer.resume()
            trainer.run(progress=False)
            params = trainer.ghn.state_dict()
        else:
            trainer = FinalTrainer(ArchGraph.from_dict(spec["arch"]), FinalConfig.from_dict(spec["config"]),
                                   out, spec["data_dir"], ctx)
            trainer.resume()
            trainer.run(progress=False)
            # parameters only: DDP syncs BatchNorm's running statistics at each forward, not after the last
            params = {**dict(trainer.net.named_parameters()),
                      **{f"aux.{k}": v for k, v in trainer.aux.named_parameters()}}
            params = {k: v.detach() for k, v in params.items()}
        torch.save({"rank": ctx.rank, "world_size": ctx.world_size, "params": params},
                   Path(out) / f"params.rank{ctx.rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
