"""Retrain the first architectures of a ground truth under a changed protocol and compare the two runs.

Two questions about the ground truth itself, asked of the same architectures:
- how repeatable is it? `--train-seed 1`: the same protocol with another SGD seed;
- does it measure what longer training would? `--epochs 4`: four times the SGD steps.
The correlation any predictor can reach is capped by the first; the second tells whether a short
protocol ranks like a longer one (the paper's ground truth trains for 50 epochs). With
`--predictions` (a `ghn correlate` predictions.json) every predictor is also correlated with both runs
on the retrained architectures.

Results go to `--out` (JSON, rewritten after every architecture, so a rerun resumes). `--shard r/n`
trains every n-th architecture starting at r, so several processes can share the work; the summary is
printed once every architecture is in the files given to `--out` (comma-separated). `--merged` then
writes a ground-truth file (the format of `ghn groundtruth`), which `ghn correlate --groundtruth` reads
like the original: with `--epochs`, the retraining under the changed protocol; with `--train-seed`
(the file's next seed), the file's runs and the retraining averaged, a ground truth of one more
repeat, as `ghn groundtruth --repeats` would train it.

    OMP_NUM_THREADS=1 python bench/studies/classification_correlation/groundtruth_retrain.py bench/studies/classification_correlation/groundtruth/classification.json --num-archs 10 \
        --train-seed 1 --out runs/gt_seed1.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from ghn_ext.studies.correlate import rank_correlations
from ghn_ext.core.data import cifar10_splits
from ghn_ext.cli.types import shard_argument
from ghn_ext.studies.groundtruth import Protocol, groundtruth_set, record_accuracy, train_under_protocol
from ghn_ext.core.files import write_json_atomic


def read_results(paths: list[Path], protocol: Protocol) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in paths:
        if path.exists():
            try:
                data = json.loads(path.read_text())
                written_under, accs = Protocol.from_dict(data["protocol"]), data["val_acc"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise SystemExit(f"{path} is damaged or not written by this script ({exc!r}); move it away") from None
            if written_under != protocol:
                raise SystemExit(f"{path} was retrained under {dataclasses.asdict(written_under)}, not "
                                 f"{dataclasses.asdict(protocol)}; use another --out")
            out.update(accs)
    return out


def merged_records(chosen: list[tuple], done: dict[str, float], protocol: Protocol, other: Protocol) -> tuple[Protocol, dict]:
    """The ground-truth file `--merged` writes: the retraining under `other` alone, or, when only the
    seed changed, the file's runs plus the retraining as one more repeat."""
    repeat = other == dataclasses.replace(protocol, seed=protocol.seed + protocol.repeats, repeats=1)
    kept = {r["hash"]: {k: v for k, v in r.items() if k not in ("train_seconds", "val_acc", "val_acc_runs")}
            for _, r in chosen}
    if not repeat:
        return other, {h: rec | {"val_acc": done[h]} for h, rec in kept.items()}
    return dataclasses.replace(protocol, repeats=protocol.repeats + 1), {
        r["hash"]: kept[r["hash"]] | record_accuracy(r.get("val_acc_runs", [r["val_acc"]]) + [done[r["hash"]]])
        for _, r in chosen}


def correlations(predicted: np.ndarray, true: np.ndarray) -> str:
    c = rank_correlations(predicted, true)
    return f"Pearson {c['pearson']:+.3f} (over the top half by the latter {c['pearson_top']:+.3f}), Spearman {c['spearman']:+.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("groundtruth")
    p.add_argument("--num-archs", type=int, default=10)
    p.add_argument("--train-seed", type=int, default=None, help="SGD seed of the retraining (default: the file's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the retraining (default: the file's)")
    p.add_argument("--out", required=True, help="results JSON; several comma-separated files to summarise shards")
    p.add_argument("--shard", type=shard_argument, default=(0, 1), help="r/n: train every n-th architecture from r")
    p.add_argument("--predictions", default=None, help="a `ghn correlate` predictions.json to correlate as well")
    p.add_argument("--merged", default=None, help="write the retrained architectures as a ground-truth file")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()

    protocol, archs, records = groundtruth_set(a.groundtruth)
    changes = {k: v for k, v in (("seed", a.train_seed), ("epochs", a.epochs)) if v is not None}
    if not changes:
        p.error("nothing to change: give --train-seed and/or --epochs")
    if a.num_archs < 3:
        p.error("--num-archs: the two runs are correlated, which needs at least 3 architectures")
    # architectures stay those of the file; a retraining is one SGD run under the changed protocol
    other = dataclasses.replace(protocol, **changes, repeats=1)
    if a.merged and "seed" in changes and (len(changes) > 1 or a.train_seed != protocol.seed + protocol.repeats):
        p.error(f"--merged with --train-seed adds a repeat to the file: give only --train-seed "
                f"{protocol.seed + protocol.repeats}, the file's next seed")
    outs = [Path(x) for x in a.out.split(",")]
    done = read_results(outs, other)
    chosen = list(zip(archs, records))[:a.num_archs]
    rank, world = a.shard
    todo = [(g, r) for g, r in chosen[rank::world] if r["hash"] not in done]
    if todo:
        mine = read_results(outs[:1], other)
        splits = cifar10_splits(a.data_dir)
        train, val = splits.train.head(other.train_images), splits.val.head(other.val_images)
        for g, r in todo:
            start = time.perf_counter()
            mine[r["hash"]] = train_under_protocol(g, other, train, val)
            write_json_atomic({"protocol": dataclasses.asdict(other), "val_acc": mine}, outs[0])
            print(json.dumps({"index": r["index"], "file": r["val_acc"], "retrained": mine[r["hash"]],
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        done = read_results(outs, other)

    missing = [r["index"] for _, r in chosen if r["hash"] not in done]
    if missing:
        print(f"{len(missing)} of {len(chosen)} architectures not retrained yet (indices {missing}); "
              "the summary needs them all")
        return
    hashes = [r["hash"] for _, r in chosen]
    first = np.array([r["val_acc"] for _, r in chosen])
    second = np.array([done[h] for h in hashes])
    print(f"{len(hashes)} architectures, file against retrained ({changes}): {correlations(first, second)}; "
          f"mean |difference| {np.abs(first - second).mean():.4f}; std {first.std():.4f} / {second.std():.4f}")
    if a.merged:
        merged, results = merged_records(chosen, done, protocol, other)
        write_json_atomic({"protocol": dataclasses.asdict(merged), "results": results}, a.merged)
        print(f"ground truth under {dataclasses.asdict(merged)} written to {a.merged}")
    if a.predictions:
        for name, pred in json.loads(Path(a.predictions).read_text()).items():
            x = np.array([pred["scores"][h]["score"] for h in hashes])
            print(f"  {name:20s} with the file: {correlations(x, first)};  with the retraining: {correlations(x, second)}")


if __name__ == "__main__":
    main()
