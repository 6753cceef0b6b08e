"""Text for a ranking: the table of the best architectures and where the search's time went."""
from __future__ import annotations

from typing import Sequence


def print_ranking(ranking: Sequence[dict], top: int) -> None:
    """The best `top` of a ranking, one line each: score, parameters, MFLOPs, the architecture."""
    label = "-val loss" if ranking and ranking[0].get("signal") == "loss" else "val acc"
    combined = bool(ranking) and "combined" in ranking[0]  # ranked by GHN + synflow: show that key too
    final = bool(ranking) and "final" in ranking[0]  # the finalists' stage ranked the top: its keys
    print(f"{'rank':>4}  " + ("GHN+synflow  " if combined else "") + ("   final  finalist  " if final else "")
          + f"{label:>9}  {'params':>9}  {'MFLOPs':>8}  architecture")
    for r, rec in enumerate(ranking[:top], 1):
        arch = rec["arch"] if isinstance(rec["arch"], str) else " ".join(rec["arch"]["ops"])
        stage = f"{rec['final']:>8.4f}  {rec['finalist_score']:>8.4f}  " if "final" in rec else " " * 20 * final
        print(f"{r:>4}  " + (f"{rec['combined']:>11.4f}  " if combined else "") + stage
              + f"{rec['score']:>9.4f}  {rec['params']:>9,}  {rec['flops'] / 1e6:>8.1f}  {arch}")


def time_summary(timing: dict, num_archs: int) -> str:
    """One line: wall time, architectures per second, and each phase's share."""
    total = timing["total"]
    phases = ", ".join(f"{k} {timing[k] / max(total, 1e-9):.0%}" for k in ("data", "sample", "ghn", "evaluate", "rank", "finalists", "other")
                       if k in timing)
    return f"{num_archs} architectures in {total:.1f} s ({num_archs / max(total, 1e-9):.2f} per s): {phases}"

