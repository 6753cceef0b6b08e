"""The paper-space search on a GPU (issue 28): `run_search` at `ghn search`'s defaults (18 cells of 17
nodes, 32 channels, 5,000 validation images, adaptive evaluation from 500 images, the shipped
classification GHN) on fewer candidates, timed phase by phase, and the time of the default 1,000-candidate
search projected from the measured rates:

    evaluation  seconds per image-candidate pair x the pairs the default schedule scores
    GHN         seconds per candidate-round (weights are generated again each round) x their number
    the rest    sampling, describing and bookkeeping, seconds per candidate x 1,000

Writes search_rate.json beside the printed table.

    python bench/gpu_search_rate.py --out DIR [--num-archs 120] [--min-final 4] [--device cuda] [--num-blocks 18] [--val-images 5000]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ghn_ext.core.timing import Stopwatch
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.workflows.search import SearchConfig, halving_rounds, run_search

PHASES = ("data", "sample", "ghn", "evaluate", "rank", "other")


def pairs_and_rounds(cfg: SearchConfig) -> tuple[int, int]:
    """(image-candidate pairs scored, candidate-rounds whose weights are generated) of cfg's schedule."""
    pairs, start, generated = 0, 0, 0
    for images, count in halving_rounds(cfg):
        pairs += (images - start) * count
        generated += count
        start = images
    return pairs, generated


def timed_search(ghn, cfg: SearchConfig, out: Path) -> dict:
    watch = Stopwatch()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_search(ghn, cfg, out, progress=False, watch=watch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    phases = watch.report()
    pairs, generated = pairs_and_rounds(cfg)
    ranking = json.loads((out / "ranking.json").read_text())["ranking"]
    flops = sum(r["flops"] * r["images"] for r in ranking)  # each candidate's FLOPs on the images it reached
    return {"num_archs": cfg.num_archs, "min_final": cfg.min_final, "rounds": halving_rounds(cfg), "wall_s": wall,
            "phases_s": phases, "pairs": pairs, "candidate_rounds": generated,
            "flops_per_image": flops / pairs, "evaluate_flop_rate": flops / max(phases.get("evaluate", 0.0), 1e-9),
            "evaluate_s_per_pair": phases.get("evaluate", 0.0) / pairs,
            "ghn_s_per_candidate_round": phases.get("ghn", 0.0) / generated,
            "rest_s_per_candidate": (wall - phases.get("evaluate", 0.0) - phases.get("ghn", 0.0)) / cfg.num_archs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--num-archs", type=int, default=120)
    p.add_argument("--min-final", type=int, default=4)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=os.environ.get("GHN_DATA_DIR"))
    p.add_argument("--num-blocks", type=int, default=18, help="smaller for a quick try on a CPU")
    p.add_argument("--val-images", type=int, default=5000, help="smaller for a quick try on a CPU")
    a = p.parse_args()
    out = Path(a.out)
    ghn = GraphHyperNetwork.pretrained("classification").to(a.device)
    default = SearchConfig(data_dir=a.data_dir, num_blocks=a.num_blocks, val_images=a.val_images)
    # warm-up (module loads, kernel selection) on a search of its own, not counted
    timed_search(ghn, replace(default, num_archs=4, val_images=200, min_images=0), out / "warmup")
    measured = timed_search(ghn, replace(default, num_archs=a.num_archs, min_final=a.min_final), out / "measured")
    pairs, generated = pairs_and_rounds(default)
    projected = {"pairs": pairs, "candidate_rounds": generated,
                 "evaluate_s": measured["evaluate_s_per_pair"] * pairs,
                 "ghn_s": measured["ghn_s_per_candidate_round"] * generated,
                 "rest_s": measured["rest_s_per_candidate"] * default.num_archs}
    projected["total_s"] = projected["evaluate_s"] + projected["ghn_s"] + projected["rest_s"]
    device = torch.cuda.get_device_name(0) if str(a.device).startswith("cuda") else "cpu"
    result = {"device": device, "torch": torch.__version__, "default_config": asdict(default),
              "default_rounds": halving_rounds(default), "measured": measured, "projected_1000": projected}
    (out / "search_rate.json").write_text(json.dumps(result, indent=1))
    m = measured
    print(f"paper-space search on {device}: {m['num_archs']} candidates (rounds {m['rounds']}) in {m['wall_s']:.1f} s; "
          "phases " + ", ".join(f"{k} {m['phases_s'][k]:.1f} s" for k in PHASES if k in m["phases_s"]))
    print(f"  evaluation {m['evaluate_s_per_pair'] * 1e6:.1f} us per image-candidate pair "
          f"({m['evaluate_flop_rate'] / 1e12:.2f} TFLOP/s at {m['flops_per_image'] / 1e9:.2f} GFLOPs per image); "
          f"GHN {m['ghn_s_per_candidate_round'] * 1e3:.1f} ms per candidate-round; "
          f"rest {m['rest_s_per_candidate'] * 1e3:.1f} ms per candidate")
    print(f"  projected default search of 1,000 ({pairs} pairs, {generated} candidate-rounds): "
          f"{projected['total_s']:.0f} s = evaluation {projected['evaluate_s']:.0f} + GHN {projected['ghn_s']:.0f} "
          f"+ rest {projected['rest_s']:.0f} (target 900 s)")


if __name__ == "__main__":
    main()
