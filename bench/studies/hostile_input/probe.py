"""Probe ghn_ext as a hostile but honest user would (issue 29) and tabulate what happened.

    OMP_NUM_THREADS=1 python bench/studies/hostile_input/probe.py --data-dir ../shared/data/cifar10 \
        --out bench/studies/hostile_input

Every probe is one thing a user can get wrong: a malformed architecture, a damaged checkpoint or data
file, a misused op, a numeric flag out of range, two runs into one output, a rerun with other settings,
a kill during a save. Each ends in one of:

    ok     the input was valid after all and the result is right
    clear  refused with a clear error: exit code 2 and the error in one line, `ghn VERB: error: ...`
           (the CLI), or an exception with a one-line message (the API); never a traceback or a signal
    crash  a traceback, a signal or another exit code
    wrong  it ran but the result is wrong (stale scores, another seed's model, ...)
    lost   finished work (a checkpoint, a score, another run's output) was lost or damaged

Writes probes.json (every probe) and table.md (counts per category). Takes about 5 minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from ghn_ext import cli
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.core.files import content_digest
from ghn_ext.ops.emit import emit_weights
from ghn_ext.ops.propagate import GNNParams, propagate
from ghn_ext.ops.schedule import dag_schedule
from ghn_ext.spaces import nb201

KINDS = ("ok", "clear", "crash", "wrong", "lost")
TINY_GHN = ["--T", "1", "--tile-channels", "4", "--channels", "4", "--cells-per-stage", "1", "--batch-size", "8"]
CELL = nb201.arch_string(nb201.sample_architecture(random.Random(0)))


class Probes:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, category: str, name: str, kind: str, detail: str = "") -> None:
        assert kind in KINDS
        self.rows.append({"category": category, "probe": name, "outcome": kind, "detail": detail[:300]})
        print(f"{kind:>5}  {category}: {name}" + (f"  ({detail[:120]})" if kind not in ("ok", "clear") else ""),
              flush=True)

    def cli(self, category: str, name: str, argv: list[str], check=None) -> None:
        """Run `ghn argv` in this process; `check()` (after a run that exited 0) says 'ok', 'wrong' or 'lost'."""
        rc, err = run_cli(argv)
        verb = argv[0]
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if rc == 2 and lines and lines[-1].startswith(f"ghn {verb}") and "Traceback" not in err:
            self.add(category, name, "clear", lines[-1])
        elif rc == 0:
            self.add(category, name, check() if check else "ok", err.strip()[-200:])
        else:
            self.add(category, name, "crash", f"rc {rc}: {err.strip()[-300:]}")

    def api(self, category: str, name: str, call) -> None:
        try:
            call()
        except (ValueError, TypeError, IndexError, RuntimeError, OverflowError) as exc:
            text = str(exc).strip().split("Exception raised from")[0].strip()
            self.add(category, name, "clear" if text and "\n" not in text else "crash", text)
        except Exception as exc:  # anything else is a crash of the probe's kind
            self.add(category, name, "crash", f"{type(exc).__name__}: {exc}")
        else:
            self.add(category, name, "wrong", "accepted")


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # a traceback a user would see
            import traceback
            traceback.print_exc()
            rc = 1
    return rc, err.getvalue()


def digest(path: Path) -> str:
    return content_digest(path.read_bytes()) if path.exists() else "missing"


# ------------------------------------------------------------------ the probes


def architectures(p: Probes, ghn: Path, data: str, tmp: Path) -> None:
    bad = {"unknown op": "|conv_9x9~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|",
           "missing node": "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|",
           "input index out of range": "|nor_conv_3x3~5|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|",
           "negative input": "|nor_conv_3x3~-1|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|",
           "no bars": "nor_conv_3x3~0+nor_conv_3x3~0",
           "JSON cell in the nb201 space": json.dumps({"ops": ["conv1x1"], "inputs": [[0, 1]]}),
           "JSON garbage": "{\"ops\": [",
           "huge bad line (10 MB)": "x" * 10_000_000}
    for name, line in bad.items():
        f = tmp / "archs.txt"
        f.write_text(line + "\n")
        p.cli("architectures", name, ["score", "--space", "nb201", "--ckpt", str(ghn), "--archs", str(f),
                                      "--data-dir", data, "--val-images", "100"])
    f = tmp / "binary.txt"
    f.write_bytes(bytes(range(256)) * 10)
    p.cli("architectures", "binary file", ["score", "--space", "nb201", "--ckpt", str(ghn), "--archs", str(f)])
    f = tmp / "empty.txt"
    f.write_text("# only a comment\n\n")
    p.cli("architectures", "no architecture in the file", ["score", "--space", "nb201", "--ckpt", str(ghn),
                                                           "--archs", str(f)])
    p.cli("architectures", "file missing", ["score", "--space", "nb201", "--ckpt", str(ghn), "--archs",
                                            str(tmp / "nothing.txt")])
    cells = {"unknown op": {"ops": ["conv9x9"], "inputs": [[0, 1]]},
             "cycle": {"ops": ["conv1x1", "conv1x1"], "inputs": [[3], [2]]},
             "input from a later node": {"ops": ["conv1x1", "conv1x1"], "inputs": [[3], [0]]},
             "no inputs": {"ops": ["conv1x1"], "inputs": [[]]},
             "ops and inputs of other lengths": {"ops": ["conv1x1", "identity"], "inputs": [[0]]},
             "not a dict": [1, 2, 3]}
    for name, cell in cells.items():
        p.cli("architectures", f"classification cell: {name}", ["show", "--arch", json.dumps(cell), "--num-blocks", "2"])
    p.cli("architectures", "empty --arch", ["show", "--arch", ""])
    p.cli("architectures", "nb201 string into the classification space", ["show", "--arch", CELL])


def checkpoints(p: Probes, ghn_path: Path, data: str, tmp: Path) -> None:
    good = ghn_path.read_bytes()
    ckpt = torch.load(ghn_path, weights_only=True)

    def resaved(change) -> bytes:  # a checkpoint someone wrote with a valid checksum
        from ghn_ext.core.files import with_checksum
        c = copy.deepcopy({k: v for k, v in ckpt.items() if k != "sha256"})
        change(c)
        buf = io.BytesIO()
        torch.save(with_checksum(c), buf)
        return buf.getvalue()

    def nan_weights(c):
        c["state_dict"] = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v
                           for k, v in c["state_dict"].items()}

    def flip(data: bytes) -> bytes:
        b = bytearray(data)
        b[len(b) // 2] ^= 0xFF
        return bytes(b)

    variants = {"empty file": b"", "truncated": good[:len(good) // 2], "flipped byte": flip(good),
                "text file": b"not a checkpoint\n", "pickle of a list": _saved([1, 2, 3]),
                "NaN weights (valid checksum)": resaved(nan_weights),
                "T = 2**62 in its config (valid checksum)": resaved(lambda c: c["config"].update(T=2 ** 62)),
                "another space (anytime)": resaved(lambda c: c["config"].update(space="anytime"))}
    archs = tmp / "one.txt"
    archs.write_text(CELL + "\n")
    for name, blob in variants.items():
        bad = tmp / "bad.pt"
        bad.write_bytes(blob)
        p.cli("checkpoints", f"score: {name}", ["score", "--space", "nb201", "--ckpt", str(bad), "--archs", str(archs),
                                                "--data-dir", data, "--val-images", "100"])
        p.cli("checkpoints", f"search: {name}", ["search", "--space", "nb201", "--ckpt", str(bad), "--out",
                                                 str(tmp / "s_bad"), "--num-archs", "2", "--val-images", "100",
                                                 "--data-dir", data, "--quiet"])
    p.cli("checkpoints", "missing file", ["score", "--space", "nb201", "--ckpt", str(tmp / "no.pt"), "--archs", str(archs)])
    p.cli("checkpoints", "a folder", ["score", "--space", "nb201", "--ckpt", str(tmp), "--archs", str(archs)])

    # a damaged training checkpoint: the resume refuses it and keeps every file of the run
    run = tmp / "run_damaged"
    assert run_cli(["train", "--space", "nb201", "--steps", "2", "--out", str(run), "--data-dir", data,
                    "--quiet", "--eval-archs", "1", "--eval-images", "100", *TINY_GHN])[0] == 0
    before = {f.name: digest(f) for f in run.iterdir() if f.name != "checkpoint.pt"}
    (run / "checkpoint.pt").write_bytes(flip((run / "checkpoint.pt").read_bytes()))
    p.cli("checkpoints", "training checkpoint with a flipped byte", [
        "train", "--space", "nb201", "--steps", "4", "--out", str(run), "--data-dir", data, "--quiet",
        "--eval-archs", "1", "--eval-images", "100", *TINY_GHN],
        check=lambda: "wrong")
    after = {f.name: digest(f) for f in run.iterdir() if f.name in before}
    if after != before:
        p.add("checkpoints", "files of the run kept after a refused resume", "lost", str(set(before) ^ set(after)))
    else:
        p.add("checkpoints", "files of the run kept after a refused resume", "ok")


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def datasets(p: Probes, ghn: Path, tmp: Path) -> None:
    import numpy as np
    archs = tmp / "one.txt"
    archs.write_text(CELL + "\n")
    folders = {"folder missing": tmp / "no_data", "empty folder": tmp / "empty_data"}
    (tmp / "empty_data").mkdir(exist_ok=True)
    garbage = tmp / "garbage_data"
    garbage.mkdir(exist_ok=True)
    (garbage / "cifar10.npz").write_bytes(os.urandom(4096))
    folders["cifar10.npz of random bytes"] = garbage
    for name, arrays in {"npz without its keys": {"x": np.zeros(3)},
                         "images of the wrong shape": {k: np.zeros((10, 32, 32), np.uint8) if k.endswith("_x")
                                                       else np.zeros(10, np.int64)
                                                       for k in ("train_x", "train_y", "test_x", "test_y")},
                         "labels out of range": {k: np.zeros((10, 32, 32, 3), np.uint8) if k.endswith("_x")
                                                 else np.full(10, 12, np.int64)
                                                 for k in ("train_x", "train_y", "test_x", "test_y")}}.items():
        d = tmp / name.replace(" ", "_")
        d.mkdir(exist_ok=True)
        np.savez(d / "cifar10.npz", **arrays)
        folders[name] = d
    for name, folder in folders.items():
        p.cli("data", f"score: {name}", ["score", "--space", "nb201", "--ckpt", str(ghn), "--archs", str(archs),
                                         "--data-dir", str(folder), "--val-images", "100"])
        p.cli("data", f"train: {name}", ["train", "--space", "nb201", "--steps", "1", "--out", str(tmp / "t_data"),
                                         "--data-dir", str(folder), "--quiet", *TINY_GHN])


def ops(p: Probes) -> None:
    edges, ptr = torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 3])
    sched = dag_schedule(edges, ptr, 3)
    params = GNNParams(*[torch.randn(s) for s in [(1, 5, 4), (1, 5), (1, 4, 5), (1, 4), (1, 12, 4), (1, 12, 4),
                                                  (1, 12), (1, 12)]])
    h0, gbp = torch.randn(3, 4), torch.tensor([0, 1])
    probes = {
        "propagate: int h0": lambda: propagate(h0.long(), ptr, gbp, sched, params, 1),
        "propagate: h0 of another width": lambda: propagate(torch.randn(3, 5), ptr, gbp, sched, params, 1),
        "propagate: T = 0": lambda: propagate(h0, ptr, gbp, sched, params, 0),
        "propagate: T = 2**62": lambda: propagate(h0, ptr, gbp, sched, params, 2 ** 62),
        "propagate: T = 2**63 - 1": lambda: propagate(h0, ptr, gbp, sched, params, 2 ** 63 - 1),
        "propagate: index tensor on meta": lambda: torch.ops.ghn_ext.propagate.default(
            h0, ptr.to("meta"), gbp, *sched[:1], *sched[3:], *params, 1, True, True),
        "propagate: block_ptr not ending at N": lambda: propagate(h0, torch.tensor([0, 2]), gbp, sched, params, 1),
        "propagate: order out of range": lambda: propagate(h0, ptr, gbp, sched._replace(order=torch.tensor([0, 1, 9])),
                                                           params, 1),
        "dag_schedule: cycle": lambda: dag_schedule(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 2]), 2),
        "dag_schedule: node_ptr not from 0": lambda: dag_schedule(edges, torch.tensor([1, 3]), 3),
        "dag_schedule: num_nodes wrong": lambda: dag_schedule(edges, ptr, 7),
        "dag_schedule: int32 edges": lambda: dag_schedule(edges.int(), ptr, 3),
        "emit: node index -1": lambda: emit_weights(torch.randn(2, 4, 4, 3, 3), [-1], [4, 4, 3, 3], [0, 0], [1.0]),
        "emit: window leaves the block": lambda: emit_weights(torch.randn(2, 4, 4, 3, 3), [0], [4, 4, 3, 3], [1, 0], [1.0]),
        "emit: buffer no int64 can size": lambda: emit_weights(torch.randn(2, 4, 4, 3, 3), [0], [2 ** 62, 4, 3, 3],
                                                               [0, 0], [1.0]),
        "emit: int blocks": lambda: emit_weights(torch.ones(2, 4, 4, 3, 3, dtype=torch.long), [0], [4, 4, 3, 3],
                                                 [0, 0], [1.0]),
        "emit: lists of other lengths": lambda: emit_weights(torch.randn(2, 4, 4, 3, 3), [0, 1], [4, 4, 3, 3],
                                                             [0, 0], [1.0]),
    }
    for name, call in probes.items():
        p.api("ops", name, call)


def numeric_flags(p: Probes) -> None:
    """Every typed flag of every verb with values no flag accepts as they are; parsed only (a value in
    range is 'ok': the run's own checks are probed elsewhere)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "python_tests"))
    from test_cli import REQUIRED, typed_flags  # the same sweep as the test suite's fuzz
    for words, flag, _ in typed_flags():
        for value in ("-1", "2147483648", "9223372036854775808", "nan", "1e400", "abc"):
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    cli.build_parser().parse_args([*words, *REQUIRED[words], f"{flag}={value}"])
                kind, line = "ok", "in range"
            except SystemExit as exc:
                line = err.getvalue().strip().splitlines()[-1]
                kind = "clear" if exc.code == 2 and flag in line else "crash"
            except Exception as exc:
                kind, line = "crash", f"{type(exc).__name__}: {exc}"
            p.add("numeric flags", f"ghn {' '.join(words)} {flag}={value}", kind, line)


def paths(p: Probes, ghn: Path, data: str, tmp: Path) -> None:
    """Outputs and inputs of the wrong kind: a file where a folder goes and the other way round."""
    a_file = tmp / "a_file"
    a_file.write_text("keep me\n")
    archs = tmp / "one.txt"
    archs.write_text(CELL + "\n")
    for argv in (["train", "--space", "nb201", "--steps", "1", *TINY_GHN], ["search", "--ckpt", str(ghn)],
                 ["ablate", "--groundtruth", str(a_file)], ["anytime", "search", "--ckpt", str(ghn)]):
        p.cli("paths", f"ghn {' '.join(argv[:2] if argv[0] == 'anytime' else argv[:1])} --out at a file",
              [*argv, "--out", str(a_file), "--data-dir", data, "--quiet"], check=lambda: "wrong")
    p.cli("paths", "ghn score --output at a folder", ["score", "--space", "nb201", "--ckpt", str(ghn), "--archs",
                                                       str(archs), "--output", str(tmp), "--data-dir", data])
    p.cli("paths", "ghn score --archs at a folder", ["score", "--space", "nb201", "--ckpt", str(ghn), "--archs",
                                                      str(tmp)])
    p.cli("paths", "ghn groundtruth --out at a folder", ["groundtruth", "--out", str(tmp), "--num-archs", "1"])
    p.add("paths", "the file in the way kept", "ok" if a_file.read_text() == "keep me\n" else "lost")


def concurrent_runs(p: Probes, ghn: Path, data: str, tmp: Path) -> None:
    """A second run into an output another process holds is refused; the holder's files stay as they were."""
    out = tmp / "held"
    out.mkdir()
    (out / "ranking.json").write_text('{"first": "run"}')
    scores = tmp / "held_scores.jsonl"
    scores.write_text('{"first": "run"}\n')
    gt = tmp / "gt.json"
    holders = [
        subprocess.Popen([sys.executable, "-c", "import sys, time; from ghn_ext.core.files import run_folder, run_file\n"
                          f"with {hold}:\n    print('held', flush=True); time.sleep(120)"],
                         stdout=subprocess.PIPE, text=True)
        for hold in (f"run_folder({str(out)!r})", f"run_file({str(scores)!r})",
                     f"run_file({str(gt)!r}, 'shard0of2')")]
    try:
        for h in holders:
            assert h.stdout.readline().strip() == "held"
        before = digest(out / "ranking.json"), digest(scores)
        archs = tmp / "one.txt"
        archs.write_text(CELL + "\n")
        for argv in (["train", "--space", "nb201", "--steps", "1", *TINY_GHN], ["search", "--ckpt", str(ghn)],
                     ["anytime", "train"], ["anytime", "search", "--ckpt", str(ghn)], ["demo"],
                     ["train-final", "--arch", str(archs)]):
            p.cli("two runs into one output", f"ghn {' '.join(argv[:2] if argv[0] == 'anytime' else argv[:1])}",
                  [*argv, "--out", str(out), "--data-dir", data, "--quiet"], check=lambda: "lost")
        p.cli("two runs into one output", "ghn score --output", [
            "score", "--space", "nb201", "--ckpt", str(ghn), "--archs", str(archs), "--output", str(scores),
            "--data-dir", data, "--val-images", "100"], check=lambda: "lost")
        p.cli("two runs into one output", "ghn groundtruth, one shard twice", [
            "groundtruth", "--out", str(gt), "--shard", "0/2", "--num-archs", "1", "--num-nodes", "3",
            "--num-blocks", "1", "--channels", "4", "--train-images", "64", "--val-images", "100",
            "--data-dir", data, "--quiet"], check=lambda: "wrong")
        after = digest(out / "ranking.json"), digest(scores)
        p.add("two runs into one output", "the holder's files unchanged", "ok" if after == before else "lost")
    finally:
        for h in holders:
            h.kill()
            h.wait()


def stale_scores(p: Probes, ghn: Path, data: str, tmp: Path) -> None:
    """Reruns into a folder with another GHN or other settings score again, never reuse."""
    other = tmp / "other_ghn.pt"
    g = GraphHyperNetwork.load(ghn)
    with torch.no_grad():
        for w in g.parameters():
            w.add_(0.05)
    g.save(other)
    out = tmp / "search_stale"
    common = ["search", "--space", "nb201", "--out", str(out), "--num-archs", "3", "--data-dir", data, "--quiet",
              "--min-final", "3"]

    def ranking():
        return json.loads((out / "ranking.json").read_text())["ranking"]

    run_cli([*common, "--ckpt", str(ghn), "--val-images", "200"])
    first = ranking()
    p.cli("reruns", "search rerun with another --ckpt", [*common, "--ckpt", str(other), "--val-images", "200"],
          check=lambda: "ok" if all(a["scorer"] != b["scorer"] for a, b in zip(ranking(), first)) else "wrong")
    p.cli("reruns", "search rerun with fewer --val-images", [*common, "--ckpt", str(other), "--val-images", "100"],
          check=lambda: "ok" if all(r["images"] == 100 for r in ranking()) else "wrong")
    archs, scores = tmp / "two.txt", tmp / "stale_scores.jsonl"
    archs.write_text(CELL + "\n")
    base = ["score", "--space", "nb201", "--archs", str(archs), "--output", str(scores), "--data-dir", data,
            "--val-images", "100"]
    run_cli([*base, "--ckpt", str(ghn)])
    old = scores.read_text()
    p.cli("reruns", "score rerun with another --ckpt", [*base, "--ckpt", str(other)],
          check=lambda: "ok" if scores.read_text() != old else "wrong")


def kills_during_saves(p: Probes, data: str, tmp: Path, kills: int = 6) -> None:
    """Kill `ghn train` (SIGKILL) at random moments of a run that checkpoints every step, resume it each
    time; the finished GHN must equal an uninterrupted run's bit for bit, with no temporary file left."""
    argv = [sys.executable, "-m", "ghn_ext.cli", "train", "--space", "nb201", "--steps", "30", "--checkpoint-every",
            "1", "--data-dir", data, "--quiet", "--eval-archs", "1", "--eval-images", "100", *TINY_GHN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp / "whole"
    subprocess.run([*argv, "--out", str(whole)], env=env, check=True, capture_output=True)
    killed = tmp / "killed"
    rng = random.Random(0)
    for k in range(kills):  # each start resumes from the checkpoint the last kill left
        proc = subprocess.Popen([*argv, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(3.0, 7.0)  # past the imports, into the steps and their saves
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode not in (0, -signal.SIGKILL):
            p.add("kills during saves", f"start {k + 1}", "lost" if "checkpoint" in err else "crash", err[-300:])
            return
        p.add("kills during saves", f"SIGKILL {k + 1}, after {delay:.1f} s", "ok")
    final = subprocess.run([*argv, "--out", str(killed)], env=env, capture_output=True, text=True)
    if final.returncode != 0:
        p.add("kills during saves", "the last resume", "lost" if "checkpoint" in final.stderr else "crash",
              final.stderr[-300:])
        return
    same = GraphHyperNetwork.load(whole / "ghn.pt").state_dict()
    got = GraphHyperNetwork.load(killed / "ghn.pt").state_dict()
    equal = all(torch.equal(same[k], got[k]) for k in same)
    p.add("kills during saves", "resumed GHN equals the uninterrupted run's", "ok" if equal else "wrong")
    left = list(killed.glob("*.tmp"))
    p.add("kills during saves", "no temporary file left", "ok" if not left else "lost", str(left))


def table(rows: list[dict]) -> str:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[r["category"]][r["outcome"]] += 1
    out = ["| category | tried | ok | clear errors | crashes | wrong results | data lost |",
           "|---|---|---|---|---|---|---|"]
    for cat, c in list(counts.items()) + [("**all**", sum(counts.values(), Counter()))]:
        out.append(f"| {cat} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in KINDS) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True, help="folder for probes.json and table.md")
    a = ap.parse_args()
    torch.manual_seed(0)
    p = Probes()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = tmp / "ghn"
        rc, err = run_cli(["train", "--space", "nb201", "--steps", "2", "--out", str(run), "--data-dir", a.data_dir,
                           "--quiet", *TINY_GHN])
        assert rc == 0, err
        ghn = run / "ghn.pt"
        architectures(p, ghn, a.data_dir, tmp)
        checkpoints(p, ghn, a.data_dir, tmp)
        datasets(p, ghn, tmp)
        ops(p)
        numeric_flags(p)
        paths(p, ghn, a.data_dir, tmp)
        concurrent_runs(p, ghn, a.data_dir, tmp)
        stale_scores(p, ghn, a.data_dir, tmp)
        kills_during_saves(p, a.data_dir, tmp)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probes.json").write_text(json.dumps(p.rows, indent=1))
    (out / "table.md").write_text(table(p.rows))
    print(table(p.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
