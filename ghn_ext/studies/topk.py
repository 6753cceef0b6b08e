"""Does the GHN's pick train better than chance? Its top-k against k random architectures (paper Fig. 4).

The top k of a `ghn search` ranking are trained under the ground truth's protocol; the k random
architectures are the first k of the ground-truth set, already trained under that same protocol and
never seen by the GHN. The search must have sampled architectures of the protocol's shape (cells of
the same N, networks of the same depth and width), so both groups are trained identically.
Trained accuracies go to out_dir/trained.json after every architecture, so the comparison resumes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ghn_ext.core.data import cifar10_splits
from ghn_ext.studies.groundtruth import Protocol, load_groundtruth, train_under_protocol
from ghn_ext.core.files import write_json_atomic
from ghn_ext.core.progress import progress_bar
from ghn_ext.workflows.search import SearchConfig, arch_from_record
from ghn_ext.core.checks import InputError


def _check_ranking_matches(ranking: dict[str, Any], protocol: Protocol, path: Path) -> SearchConfig:
    cfg = SearchConfig(**ranking["config"])
    searched = (ranking["space"], cfg.num_nodes, cfg.num_blocks, cfg.channels)
    wanted = (protocol.space, protocol.num_nodes, protocol.num_blocks, protocol.channels)
    if searched != wanted:
        raise InputError(f"{path} ranks (space, nodes, blocks, channels) = {searched} but the ground truth "
                         f"trains {wanted}; search with --num-nodes {protocol.num_nodes} --num-blocks "
                         f"{protocol.num_blocks} --channels {protocol.channels}")
    return cfg


def _summary(accs: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(accs)), "best": float(np.max(accs)), "worst": float(np.min(accs)),
            "std": float(np.std(accs))}


def plot_groups(groups: dict[str, list[float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    for x, (label, accs) in enumerate(groups.items()):
        ax.scatter(np.full(len(accs), x) + np.linspace(-0.08, 0.08, len(accs)), accs, s=14)
        ax.hlines(np.mean(accs), x - 0.2, x + 0.2, colors="k")
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("validation accuracy after training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare_top_with_random(groundtruth: str | Path, ranking_path: str | Path, out_dir: str | Path, k: int = 10,
                            data_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the ranking's top k under the ground-truth protocol; compare with k random ones."""
    protocol, records = load_groundtruth(groundtruth)
    if len(records) < k:
        raise InputError(f"{groundtruth} holds {len(records)} trained architectures; need k={k} random ones")
    ranking_path = Path(ranking_path)
    if not ranking_path.is_file():
        raise FileNotFoundError(f"ranking file {ranking_path} does not exist (run `ghn search` first)")
    try:
        ranking = json.loads(ranking_path.read_text())
        cfg = _check_ranking_matches(ranking, protocol, ranking_path)
        top = ranking["ranking"][:k]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{ranking_path} is not a ranking.json of `ghn search` ({exc!r})") from None
    if len(top) < k:
        raise InputError(f"{ranking_path} ranks only {len(top)} architectures; need k={k}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained_path = out / "trained.json"
    trained: dict[str, Any] = {}
    if trained_path.exists():
        try:
            trained = json.loads(trained_path.read_text())
            assert isinstance(trained, dict)
        except (json.JSONDecodeError, AssertionError):
            raise InputError(f"{trained_path} is damaged; move it away to retrain the top {k}") from None
    splits = cifar10_splits(data_dir)
    train, val = splits.train.head(protocol.train_images), splits.val.head(protocol.val_images)
    with progress_bar(k, sum(r["hash"] in trained for r in top), "GHN top-k", not progress) as bar:
        for rec in top:
            if rec["hash"] in trained:
                continue
            start = time.perf_counter()
            acc = train_under_protocol(arch_from_record(rec, protocol.space, cfg), protocol, train, val)
            trained[rec["hash"]] = {**rec, "val_acc": acc, "train_seconds": round(time.perf_counter() - start, 2)}
            write_json_atomic(trained, trained_path)
            bar.set_postfix(last=f"{acc:.3f}")
            bar.update(1)

    groups = {f"GHN top-{k}": [trained[r["hash"]]["val_acc"] for r in top],
              f"random {k}": [r["val_acc"] for r in records[:k]]}
    result = {"k": k, "protocol_steps": protocol.steps, "ranking": str(ranking_path),
              "groups": {name: {**_summary(accs), "accs": accs} for name, accs in groups.items()}}
    write_json_atomic(result, out / "compare.json")
    plot_groups(groups, out / "compare.png")
    lines = ["| group | mean | best | worst | std |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {g['mean']:.3f} | {g['best']:.3f} | {g['worst']:.3f} | {g['std']:.3f} |"
              for name, g in result["groups"].items()]
    result["markdown"] = "\n".join(lines) + "\n"
    (out / "compare.md").write_text(result["markdown"])
    return result


__all__ = ["compare_top_with_random", "plot_groups"]
