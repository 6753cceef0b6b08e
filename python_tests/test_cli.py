"""Tests for the `ghn` command (ghn_ext.cli.main): every verb on tiny settings, and one clear line
with exit code 2 for everything a user can get wrong.

`ghn train` always validates 8 architectures of 17-node cells on 500 images at its last step (no flag
sets that size); the training runs here shrink it to 1 architecture on 100 images by wrapping
cli.train._train_config, everything else goes through the real command.
"""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ghn_ext import cli  # noqa: E402

from ghn_ext.workflows import demo  # noqa: E402
from ghn_ext.models.ghn import GraphHyperNetwork  # noqa: E402
from ghn_ext.spaces import SPACES, classification, get_space, nb201  # noqa: E402
from ghn_ext.workflows.train import TrainConfig, read_log  # noqa: E402

VERBS = {"train", "score", "search", "show", "demo", "groundtruth", "correlate", "train-final", "ablate",
         "compare-top", "anytime", "info", "data"}
# their space is the ground-truth file's, or the anytime space
SPACELESS_VERBS = {"ablate", "compare-top", "anytime", "info", "data"}
# verbs that take --space but only some spaces
SOME_SPACES = {"correlate": ("classification", "nb201")}
NB201_ARCHS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
               "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"]
CELL_A = {"ops": ["sep_conv3x3", "max_pool3x3", "identity"], "inputs": [[0], [1], [2, 3]]}
CELL_B = {"ops": ["conv1x1", "dil_sep_conv3x3"], "inputs": [[0, 1], [1]]}


@contextlib.contextmanager
def small_validation():
    real = cli.train._train_config
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.train, "_train_config", lambda a: replace(real(a), eval_archs=1, eval_images=100))
        yield


def train_argv(out, data_dir, space="classification", steps=2, *extra):
    macro = ["--num-nodes", "3", "--num-blocks", "1", "--channels", "4"] if space == "classification" else \
        ["--channels", "4", "--cells-per-stage", "1"]
    return ["train", "--space", space, "--out", str(out), "--steps", str(steps), "--batch-size", "8",
            "--T", "1", "--tile-channels", "4", "--data-dir", data_dir, "--quiet", *macro, *extra]


def run_quietly(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    assert rc == 0, err.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def cls_run(data_dir, tmp_path_factory):
    """`ghn train` of a classification GHN: 2 steps."""
    out = tmp_path_factory.mktemp("train_cls")
    with small_validation():
        run_quietly(train_argv(out, data_dir))
    return out


@pytest.fixture(scope="module")
def nb201_ghn(data_dir, tmp_path_factory):
    """`ghn train --space nb201`: 1 step; the GHN file."""
    out = tmp_path_factory.mktemp("train_nb201")
    with small_validation():
        run_quietly(train_argv(out, data_dir, "nb201", 1))
    return out / "ghn.pt"


def one_error_line(capsys, verb):
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"ghn {verb}: error: "), err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------ parser

def test_all_verbs_exist_and_accept_space(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == VERBS
    for verb, p in sub.choices.items():
        space = p._option_string_actions.get("--space")
        if verb in SPACELESS_VERBS:
            assert space is None, verb
            continue
        assert space is not None, verb
        assert tuple(space.choices) == SOME_SPACES.get(verb, SPACES) and space.default == "classification"
        with pytest.raises(SystemExit) as exit_:
            cli.main([verb, "--help"])
        assert exit_.value.code == 0
        assert "--space" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # a space that does not exist: argparse's usage error
        cli.main(["show", "--space", "imagenet"])
    assert exit_.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_module_entry_point_help():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "ghn_ext.cli", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert all(verb in res.stdout for verb in VERBS)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["trian", "--out", "x"], []])
def test_the_verbs_list_and_version_answer_without_importing_torch(argv):
    """Issue 31: `ghn --help` took 2-5 s importing torch; only a verb's own options need it."""
    code = ("import sys\nfrom ghn_ext.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.stderr.strip().endswith("torch imported: False"), res.stderr


# ------------------------------------------------------------------ train

def test_train_writes_a_ghn_and_a_second_call_resumes(cls_run, data_dir, tmp_path, capsys):
    assert [r["step"] for r in read_log(cls_run / "train_log.jsonl")] == [0, 1]
    assert GraphHyperNetwork.load(cls_run / "ghn.pt", space="classification").config.tile_channels == 4
    shutil.copytree(cls_run, tmp_path, dirs_exist_ok=True)
    with small_validation():
        assert cli.main(train_argv(tmp_path, data_dir, steps=3)) == 0
    out = capsys.readouterr().out
    assert f"resuming {tmp_path} at step 2" in out
    assert "trained 3 steps" in out
    assert [r["step"] for r in read_log(tmp_path / "train_log.jsonl")] == [0, 1, 2]


def test_train_restart_ignores_the_checkpoint(cls_run, data_dir, tmp_path, capsys):
    shutil.copytree(cls_run, tmp_path, dirs_exist_ok=True)
    with small_validation():
        assert cli.main(train_argv(tmp_path, data_dir, "classification", 1, "--restart")) == 0
    assert "resuming" not in capsys.readouterr().out
    assert [r["step"] for r in read_log(tmp_path / "train_log.jsonl")] == [0]  # a fresh log


# ------------------------------------------------------------------ score

def test_score_nb201_strings(nb201_ghn, data_dir, tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text("# NAS-Bench-201 cells\n" + "\n".join(NB201_ARCHS) + "\n\n")
    scores = tmp_path / "scores.jsonl"
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs),
                     "--channels", "4", "--cells-per-stage", "1", "--val-images", "100",
                     "--data-dir", data_dir, "--output", str(scores)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(l) for l in scores.read_text().splitlines()]
    assert [r["arch"] for r in rows] == NB201_ARCHS
    assert [r["hash"] for r in rows] == [nb201.network(a, 4, 1).stable_hash() for a in NB201_ARCHS]
    assert all(r["signal"] == "loss" and r["score"] < 0 for r in rows)  # the nb201 default: -loss
    assert out[:2] == [f"{r['score']:.4f}  {r['arch']}" for r in rows]
    assert out[2] == f"saved 2 scores to {scores}"
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs),
                     "--channels", "4", "--cells-per-stage", "1", "--val-images", "100", "--signal", "accuracy",
                     "--data-dir", data_dir, "--output", str(scores)]) == 0
    rows = [json.loads(l) for l in scores.read_text().splitlines()]
    assert [r["signal"] for r in rows] == ["loss"] * 2 + ["accuracy"] * 2  # the earlier rows are kept
    assert all(0.0 <= r["score"] <= 1.0 for r in rows[2:])


def test_score_streams_each_batch_before_the_next(nb201_ghn, data_dir, tmp_path, capsys, monkeypatch):
    """A run killed after its first batch has printed and saved that batch's score; the rerun scores
    only the rest and writes every row in the order of the file."""
    import ghn_ext.models.scoring as E
    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(NB201_ARCHS) + "\n")
    scores = tmp_path / "scores.jsonl"
    real, calls = E.score_architectures, []

    def killed_on_the_second_batch(ghn, chunk, *a, **kw):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(ghn, chunk, *a, **kw)

    monkeypatch.setattr(E, "score_architectures", killed_on_the_second_batch)
    argv = ["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs), "--val-images", "100",
            "--archs-per-batch", "1", "--data-dir", data_dir, "--output", str(scores)]
    assert cli.main(argv) == 130
    rows = [json.loads(l) for l in scores.read_text().splitlines()]
    assert calls == [1, 1] and [r["arch"] for r in rows] == NB201_ARCHS[:1]
    assert capsys.readouterr().out.splitlines()[-1] == f"{rows[0]['score']:.4f}  {NB201_ARCHS[0]}"
    with scores.open("a") as f:
        f.write('{"arch": "cut short')  # and a line cut short by the kill
    calls.clear()
    assert cli.main(argv) == 0
    assert calls == [1]  # only the second cell
    again = [json.loads(l) for l in scores.read_text().splitlines()]
    assert [r["arch"] for r in again] == NB201_ARCHS and again[0] == rows[0]


def test_score_nb201_in_the_skeleton_its_ghn_was_trained_in(nb201_ghn, data_dir, tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text(NB201_ARCHS[0] + "\n")
    scores = tmp_path / "scores.jsonl"
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs),
                     "--val-images", "100", "--data-dir", data_dir, "--output", str(scores)]) == 0
    row = json.loads(scores.read_text())
    assert row["hash"] == nb201.network(NB201_ARCHS[0], 4, 1).stable_hash()  # train_argv's 4 channels, 1 cell


def test_score_classification_cells_and_graph_json(cls_run, data_dir, tmp_path, capsys):
    graph = classification.cifar_network(classification.Cell.from_dict(CELL_B), num_blocks=1, channels=4)
    archs = tmp_path / "archs.jsonl"
    archs.write_text(json.dumps(CELL_A) + "\n" + graph.to_json() + "\n")
    scores = tmp_path / "scores.jsonl"
    assert cli.main(["score", "--ckpt", str(cls_run / "ghn.pt"), "--archs", str(archs), "--num-blocks", "1",
                     "--channels", "4", "--val-images", "100", "--data-dir", data_dir,
                     "--output", str(scores)]) == 0
    expected = [classification.cifar_network(classification.Cell.from_dict(CELL_A), 1, 4).stable_hash(),
                graph.stable_hash()]
    rows = [json.loads(l) for l in scores.read_text().splitlines()]
    assert [r["hash"] for r in rows] == [r["arch"] for r in rows] == expected
    assert all(r["signal"] == "accuracy" and 0.0 <= r["score"] <= 1.0 for r in rows)
    assert len(capsys.readouterr().out.splitlines()) == 3


# ------------------------------------------------------------------ search

def test_search_ranks_and_runs_top_best(cls_run, data_dir, tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["search", "--ckpt", str(cls_run / "ghn.pt"), "--out", str(out), "--num-archs", "3",
            "--num-nodes", "3", "--num-blocks", "1", "--channels", "4", "--val-images", "100",
            "--archs-per-batch", "2", "--top-best", "1", "--top-best-steps", "1", "--data-dir", data_dir,
            "--quiet"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    ranking = json.loads((out / "ranking.json").read_text())["ranking"]
    assert len(ranking) == 3 and [r["score"] for r in ranking] == sorted((r["score"] for r in ranking),
                                                                         reverse=True)
    best = json.loads((out / "top_best.json").read_text())["best"]
    assert best["hash"] == ranking[0]["hash"] and best["trained_steps"] == 1
    assert "rank" in printed and f"top-best after 1 SGD steps: {best['hash']}" in printed
    assert f"ranking written to {out / 'ranking.json'}" in printed
    # the same command again resumes: nothing left to score, same ranking
    assert cli.main(argv) == 0
    assert json.loads((out / "ranking.json").read_text())["ranking"] == ranking


# ------------------------------------------------------------------ show

def test_show_renders_a_cell(tmp_path, capsys):
    has_dot = shutil.which("dot") is not None
    picture = tmp_path / ("cell.png" if has_dot else "cell.dot")
    assert cli.main(["show", "--space", "nb201", "--arch", NB201_ARCHS[0], "--channels", "4",
                     "--cells-per-stage", "1", "--out", str(picture), "--cell"]) == 0
    out = capsys.readouterr().out
    assert f"hash: {nb201.network(NB201_ARCHS[0], 4, 1).stable_hash()}" in out
    assert f"rendered to {picture}" in out
    data = picture.read_bytes()
    assert data.startswith(b"\x89PNG") if has_dot else data.startswith(b"digraph")


def test_show_random_architecture_and_file_to_dot(tmp_path, capsys):
    assert cli.main(["show", "--num-nodes", "4", "--num-blocks", "2", "--channels", "8",
                     "--out", str(tmp_path / "net.dot")]) == 0
    dot = (tmp_path / "net.dot").read_text()
    assert dot.startswith("digraph") and "block 2" in dot  # the whole network
    assert "space: classification" in capsys.readouterr().out
    archs = tmp_path / "archs.jsonl"
    archs.write_text(json.dumps(CELL_A) + "\n")
    assert cli.main(["show", "--arch", str(archs), "--num-blocks", "1", "--channels", "4", "--cell",
                     "--out", str(tmp_path / "cell.dot")]) == 0
    cell = (tmp_path / "cell.dot").read_text()
    assert "sep_conv3x3" in cell and "block 1" not in cell  # one cell only
    expected = classification.cifar_network(classification.Cell.from_dict(CELL_A), 1, 4).stable_hash()
    assert f"hash: {expected}" in capsys.readouterr().out


# ------------------------------------------------------------------ demo

def test_demo_ci_at_a_tinier_size(data_dir, tmp_path, monkeypatch, capsys):
    # `ghn demo --budget ci` itself takes about a minute on two busy cores: same code path, smaller sizes
    monkeypatch.setitem(demo.BUDGETS, "ci", demo.DemoBudget(train_steps=2, evaluations=1, search_archs=2,
                                                            val_images=100))
    monkeypatch.setattr(get_space("classification"), "demo_skeleton", dict(num_blocks=1, channels=4))
    out = tmp_path / "report"
    assert cli.main(["demo", "--budget", "ci", "--out", str(out), "--data-dir", data_dir, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out}/" in printed
    names = {p.name for p in out.iterdir()}
    assert {"ranking.json", "training_curve.png", "summary.md", "ghn_run", "search"} <= names
    assert "best_cell.png" in names  # drawn with matplotlib where graphviz is missing
    ranking = json.loads((out / "ranking.json").read_text())["ranking"]
    assert len(ranking) == 2
    summary = (out / "summary.md").read_text()
    assert "# ghn demo (ci)" in summary and ranking[0]["hash"] in summary
    assert "chance is 0.10" in summary  # issue 31: what the accuracies mean, in the report and the output
    assert (out / "ghn_run" / "ghn.pt").is_file()


# ------------------------------------------------------------------ user errors: exit 2, one line

def test_unknown_architecture_string_in_a_score_file(nb201_ghn, tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text(NB201_ARCHS[0] + "\n|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs)]) == 2
    err = one_error_line(capsys, "score")
    assert f"{archs}:2:" in err and "unknown op 'conv_9x9'" in err


def test_garbage_line_in_a_score_file(nb201_ghn, tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text("resnet50\n")
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs)]) == 2
    assert f"{archs}:1: not a NAS-Bench-201 string" in one_error_line(capsys, "score")


def test_classification_cell_with_an_unknown_op(cls_run, tmp_path, capsys):
    archs = tmp_path / "archs.jsonl"
    archs.write_text(json.dumps({"ops": ["conv9x9"], "inputs": [[0, 1]]}) + "\n")
    assert cli.main(["score", "--ckpt", str(cls_run / "ghn.pt"), "--archs", str(archs)]) == 2
    err = one_error_line(capsys, "score")
    assert f"{archs}:1:" in err and "unknown op 'conv9x9'" in err


def test_architecture_of_another_space_in_a_score_file(cls_run, tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text(NB201_ARCHS[0] + "\n")
    assert cli.main(["score", "--ckpt", str(cls_run / "ghn.pt"), "--archs", str(archs)]) == 2
    assert "a 'nb201' architecture, but --space is 'classification'" in one_error_line(capsys, "score")


def test_score_file_that_does_not_exist(cls_run, tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert cli.main(["score", "--ckpt", str(cls_run / "ghn.pt"), "--archs", str(missing)]) == 2
    assert f"architecture file {missing} does not exist" in one_error_line(capsys, "score")


@pytest.mark.parametrize("verb", ["score", "search"])
def test_missing_checkpoint(tmp_path, capsys, verb):
    missing = tmp_path / "ghn.pt"
    extra = ["--archs", "x.txt"] if verb == "score" else ["--out", str(tmp_path / "s")]
    assert cli.main([verb, "--ckpt", str(missing), *extra]) == 2
    assert f"checkpoint {missing} does not exist" in one_error_line(capsys, verb)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint(cls_run, tmp_path, capsys, damage):
    ckpt = tmp_path / "ghn.pt"
    data = (cls_run / "ghn.pt").read_bytes()
    ckpt.write_bytes(b"\x80\x02garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    assert cli.main(["score", "--ckpt", str(ckpt), "--archs", "x.txt"]) == 2
    assert f"checkpoint {ckpt} is corrupt or not a ghn_ext checkpoint" in one_error_line(capsys, "score")


def test_checkpoint_of_another_space(nb201_ghn, tmp_path, capsys):
    archs = tmp_path / "archs.jsonl"
    archs.write_text(json.dumps(CELL_A) + "\n")
    assert cli.main(["score", "--space", "classification", "--ckpt", str(nb201_ghn), "--archs", str(archs)]) == 2
    assert f"checkpoint {nb201_ghn} is a GHN for the 'nb201' space, not 'classification'" in \
        one_error_line(capsys, "score")


def test_train_resume_with_other_settings(cls_run, data_dir, tmp_path, capsys):
    shutil.copytree(cls_run, tmp_path, dirs_exist_ok=True)
    with small_validation():
        assert cli.main(train_argv(tmp_path, data_dir, "classification", 2, "--lr", "0.01")) == 2
    err = one_error_line(capsys, "train")
    assert f"cannot resume from {tmp_path / 'checkpoint.pt'}" in err and "other settings (lr)" in err


def test_train_corrupt_training_checkpoint(cls_run, data_dir, tmp_path, capsys):
    shutil.copytree(cls_run, tmp_path, dirs_exist_ok=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cli.main(train_argv(tmp_path, data_dir)) == 2
    assert f"cannot resume: checkpoint {tmp_path / 'checkpoint.pt'} is corrupt" in one_error_line(capsys, "train")


def test_train_without_data(tmp_path, capsys):
    assert cli.main(train_argv(tmp_path / "run", str(tmp_path / "no_data"))) == 2
    assert "CIFAR-10 not found" in one_error_line(capsys, "train")


def test_train_ema_out_of_range(tmp_path, data_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(train_argv(tmp_path / "run", data_dir, "classification", 2, "--ema", "1"))
    assert exc.value.code == 2
    assert "argument --ema: must be a number in [0, 1), got 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"ema is a decay in \[0, 1\) \(0: off\), not 1.0"):  # the API's own check
        TrainConfig(ema=1.0)


def test_a_run_refused_after_parsing_leaves_no_folder_behind(tmp_path, data_dir, capsys):
    """The output folder is held before the command runs; a setting refused then leaves nothing."""
    assert cli.main(train_argv(tmp_path / "run", data_dir, "classification", 2, "--T", "1001")) == 2
    assert "T must be an integer in [1, 1000]" in one_error_line(capsys, "train")
    assert not (tmp_path / "run").exists()


def test_show_bad_architecture_string(capsys):
    assert cli.main(["show", "--space", "nb201", "--arch", "|nor_conv_3x3~1|"]) == 2
    assert "not a NAS-Bench-201 string" in one_error_line(capsys, "show")


def test_show_empty_architecture_string_is_an_error_not_a_random_cell(capsys):
    """Issue 29: `ghn show --arch ""` showed a random architecture."""
    assert cli.main(["show", "--space", "nb201", "--arch", ""]) == 2
    assert "not a NAS-Bench-201 string" in one_error_line(capsys, "show")


def test_score_file_that_is_binary_or_has_a_huge_bad_line(nb201_ghn, tmp_path, capsys):
    """Issue 29: binary input gave a codec error without the file's name; a 10 MB bad line was echoed
    whole into the error."""
    binary = tmp_path / "archs.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(binary)]) == 2
    assert f"{binary} is not a text file of architectures" in one_error_line(capsys, "score")
    huge = tmp_path / "huge.txt"
    huge.write_text("|" + "x" * 10_000_000 + "|\n")
    assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(huge)]) == 2
    err = one_error_line(capsys, "score")
    assert f"{huge}:1:" in err and err.rstrip().endswith("(cut)") and len(err) < 1000


# ------------------------------------------------------------------ numeric flags (issue 29)

@pytest.mark.parametrize("argv,message", [
    (["train", "--out", "x", "--eval-archs", "0"], r"argument --eval-archs: must be a positive integer in \[1, 2147483647\], got 0"),
    (["train", "--out", "x", "--checkpoint-every", "0"], "argument --checkpoint-every: must be a positive integer in"),
    (["train", "--out", "x", "--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    (["train", "--out", "x", "--tile-channels", "0"], "argument --tile-channels: must be a positive integer"),
    (["train", "--out", "x", "--steps", "-3"], r"argument --steps: must be a positive integer in \[1, 2147483647\], got -3"),
    (["train", "--out", "x", "--lr", "1e20"], r"argument --lr: must be a learning rate in \(0, 10\], got 1e20"),
    (["train", "--out", "x", "--lr", "nan"], r"argument --lr: must be a learning rate in \(0, 10\], got nan"),
    (["train", "--out", "x", "--channels", "0"], r"argument --channels: must be a positive integer in \[1, 2147483647\], got 0"),
    (["train", "--out", "x", "--cells-per-stage", "-1"], "argument --cells-per-stage: must be a positive integer"),
    (["search", "--out", "x", "--val-images", "-5"], r"argument --val-images: must be a positive integer in \[1, 2147483647\], got -5"),
    (["search", "--out", "x", "--val-images", "0"], r"argument --val-images: must be a positive integer in \[1, 2147483647\], got 0"),
    (["search", "--out", "x", "--num-archs", "-1"], r"argument --num-archs: must be a positive integer in \[1, 2147483647\], got -1"),
    (["search", "--out", "x", "--min-images", "-1"], r"argument --min-images: must be an integer in \[0, 2147483647\], got -1"),
    (["score", "--archs", "a", "--channels", "x"], "argument --channels: expected an integer, got 'x'"),
])
def test_numeric_flags_out_of_range_are_refused_naming_the_flag(argv, message, capsys):
    """Issue 29: these ran into tracebacks, never-ending reruns or silently other values."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


REQUIRED = {("train",): ["--out", "x"], ("score",): ["--archs", "a"], ("search",): ["--out", "x"], ("show",): [],
            ("groundtruth",): ["--out", "x"], ("correlate",): ["--groundtruth", "g", "--out", "x"],
            ("ablate",): ["--groundtruth", "g", "--out", "x"],
            ("compare-top",): ["--groundtruth", "g", "--ranking", "r", "--out", "x"],
            ("train-final",): ["--out", "x"], ("demo",): [], ("anytime", "train"): ["--out", "x"],
            ("anytime", "search"): ["--ckpt", "c", "--out", "x"], ("anytime", "train-final"): ["--ranking", "r", "--out", "x"]}


def typed_flags():
    """(verb words, flag, type) of every option of every verb that converts its value."""
    import argparse
    found = []

    def walk(parser, words):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))
            elif action.option_strings and action.type not in (None, str):
                found.append((words, action.option_strings[-1], action.type))
    walk(cli.build_parser(), ())
    return found


def test_every_numeric_flag_checks_its_range():
    """Issue 29: a plain int or float flag let 0, -1 and 1e20 through to a traceback later."""
    from ghn_ext.cli import types as cli_types
    checked = {cli_types.positive_int, cli_types.nonnegative_int, cli_types.seed, cli_types.fraction,
               cli_types.nonnegative_real, cli_types.learning_rate}
    flags = typed_flags()
    assert {words for words, _, _ in flags} <= set(REQUIRED) and len(flags) > 60
    for words, flag, kind in flags:
        assert kind not in (int, float), f"ghn {' '.join(words)} {flag} is a plain {kind.__name__}"
        assert kind in checked or kind.__module__ != "builtins", (words, flag)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(typed_flags()),
       value=st.one_of(st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(["", "1.5", "0x10", "nan", "-0", "1e400", "3,-1", "0:0", "1/0", "2,1"])))
def test_fuzz_numeric_flags_give_a_config_or_a_clear_refusal(which, value, capsys):
    """Any value of any typed flag of any verb either parses (and, for train and search, builds a valid
    configuration) or is refused with exit code 2 and a message naming the flag: never a traceback."""
    words, flag, _ = which
    argv = [*words, *REQUIRED[words], f"{flag}={value}"]
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2 and flag in capsys.readouterr().err
        return
    try:
        if words == ("train",):
            cli.train._train_config(args)
        elif words == ("search",):  # the skeleton settings not given come from the GHN
            cli.search._search_config(args)
    except ValueError as exc:  # caught by main: one line naming the field
        field = {"block_channels": "tile_channels"}.get(*[flag.lstrip("-").replace("-", "_")] * 2)  # an alias
        assert field in str(exc) or "T" in str(exc)


# ------------------------------------------------------------------ one run per folder (issue 29)

def hold_in_another_process(hold: str, path) -> subprocess.Popen:
    """A process that holds `path` with ghn_ext.core.files's `hold` (e.g. "run_folder(p)") until killed."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                               "from ghn_ext.core.files import run_file, run_folder\np = Path(sys.argv[1])\n"
                               f"with {hold}:\n    print('held', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    assert holder.stdout.readline().strip() == "held"
    return holder


FOLDER_WRITERS = [["train"], ["search"], ["train-final", "--arch", "a.txt"], ["ablate", "--groundtruth", "g.json"],
                  ["compare-top", "--groundtruth", "g.json", "--ranking", "r.json"], ["demo"], ["anytime", "train"],
                  ["anytime", "search", "--ckpt", "g.pt"], ["anytime", "train-final", "--ranking", "r.json"]]


def test_a_second_run_into_a_held_folder_is_refused_and_the_lock_survives_no_crash(tmp_path, capsys):
    """Issue 29: two `ghn train` runs into one --out both exited 0 and the first model was lost; so for
    every verb that writes a run folder. A holder killed with SIGKILL leaves its lock behind as a file
    only: the next run takes the folder, and removes the temporaries of the saves the kill interrupted."""
    out = tmp_path / "run"
    holder = hold_in_another_process("run_folder(p)", out)
    try:
        for argv in FOLDER_WRITERS:
            assert cli.main([*argv, "--out", str(out)]) == 2, argv
            assert f"{out} is in use by another run (pid {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    (out / "checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    from ghn_ext.core.files import run_folder
    with run_folder(out):
        assert not list(out.glob("*.tmp"))


def test_a_second_score_into_a_held_output_file_is_refused(nb201_ghn, tmp_path, capsys):
    """Issue 29: two `ghn score --output F` at once interleaved their rows in F."""
    archs, scores = tmp_path / "archs.txt", tmp_path / "scores.jsonl"
    archs.write_text(NB201_ARCHS[0] + "\n")
    holder = hold_in_another_process("run_file(p)", scores)
    try:
        assert cli.main(["score", "--space", "nb201", "--ckpt", str(nb201_ghn), "--archs", str(archs),
                         "--output", str(scores)]) == 2
        assert f"{scores} is being written by another run (pid {holder.pid})" in one_error_line(capsys, "score")
    finally:
        holder.kill()
        holder.wait()
    assert not scores.exists()


def test_score_rescores_rows_of_another_ghn(nb201_ghn, data_dir, tmp_path, capsys):
    """Issue 29: a rerun into an --output written with another GHN printed that GHN's scores."""
    import torch
    other = tmp_path / "other.pt"
    ghn = GraphHyperNetwork.load(nb201_ghn)
    with torch.no_grad():
        for p in ghn.parameters():
            p.add_(0.05)
    ghn.save(other)
    archs, scores = tmp_path / "archs.txt", tmp_path / "scores.jsonl"
    archs.write_text("\n".join(NB201_ARCHS) + "\n")

    def score(ckpt):
        assert cli.main(["score", "--space", "nb201", "--ckpt", str(ckpt), "--archs", str(archs), "--channels", "4",
                         "--cells-per-stage", "1", "--val-images", "100", "--data-dir", data_dir, "--quiet",
                         "--output", str(scores)]) == 0
        return capsys.readouterr().err, [json.loads(line) for line in scores.read_text().splitlines()]

    _, first = score(nb201_ghn)
    err, again = score(nb201_ghn)
    assert "2 scored before" in err and again == first
    err, rows = score(other)
    assert "scored before" not in err
    assert {r["scorer"] for r in rows} != {r["scorer"] for r in first}
    assert [r["score"] for r in rows] != [r["score"] for r in first]


def test_show_takes_a_classification_cell_as_json_and_names_what_is_wrong(capsys):
    """Issue 29 probes: `show --arch` read every string as a NAS-Bench-201 cell, so a JSON cell was
    'not a NAS-Bench-201 string' whatever was wrong with it."""
    assert cli.main(["show", "--arch", json.dumps(CELL_A), "--num-blocks", "2"]) == 0
    assert "space: classification" in capsys.readouterr().out
    for cell, message in (({"ops": ["conv9x9"], "inputs": [[0, 1]]}, "unknown op 'conv9x9'"),
                          ({"ops": ["conv1x1", "conv1x1"], "inputs": [[3], [2]]}, "must be distinct and in [0, 2)"),
                          ([1, 2], "expected a JSON object")):
        assert cli.main(["show", "--arch", json.dumps(cell)]) == 2
        assert message in one_error_line(capsys, "show")


@pytest.mark.parametrize("argv,message", [
    (["train", "--out", "{file}"], "is a file, not an output folder"),
    (["search", "--out", "{file}"], "is a file, not an output folder"),
    (["score", "--archs", "{file}", "--output", "{folder}"], "is a folder, not an output file"),
    (["score", "--archs", "{folder}"], "is not a file"),
])
def test_outputs_and_inputs_of_the_wrong_kind(argv, message, tmp_path, capsys):
    """Issue 29 probes: --out at an existing file ended in a FileExistsError traceback."""
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    argv = [x.format(file=a_file, folder=tmp_path) for x in argv]
    assert cli.main(argv) == 2
    assert message in one_error_line(capsys, argv[0])
    assert a_file.read_text() == "keep me\n"


def test_train_flags_left_unset_take_the_space_defaults():
    """nb201 trains 20,000 steps in the 1-cell, 16-channel skeleton with a 64-channel emitted block (the
    recipe measured in bench/studies/nb201_ranking); the paper space keeps 32; a flag given wins."""
    nb201 = cli.train._train_config(cli.build_parser().parse_args(["train", "--space", "nb201", "--out", "o"]))
    assert (nb201.steps, nb201.ghn.tile_channels, nb201.cells_per_stage, nb201.channels,
            nb201.snapshot_every, nb201.archs_per_step) == (20000, 64, 1, 16, 3000, 1)
    paper = cli.train._train_config(cli.build_parser().parse_args(["train", "--out", "o"]))
    assert (paper.steps, paper.ghn.tile_channels, paper.snapshot_every) == (1000, 32, 0)
    given = cli.train._train_config(cli.build_parser().parse_args(
        ["train", "--space", "nb201", "--tile-channels", "16", "--steps", "5", "--hidden", "48",
         "--message-hidden", "40", "--hyper-hidden", "96", "--out", "o"]))
    assert (given.steps, given.ghn.tile_channels) == (5, 16)
    assert (given.ghn.hidden, given.ghn.message_hidden, given.ghn.hyper_hidden) == (48, 40, 96)
    assert (nb201.ghn.hidden, nb201.ghn.message_hidden, nb201.ghn.hyper_hidden) == (32, 32, 64)  # the paper's


def test_train_op_weights_flag(tmp_path, capsys):
    """--op-weights op=w,...: parsed at the command line, checked by the space; a bad one is one line.
    nb201 trains on convolution-heavy cells by default (bench/studies/nb201_ranking/op_weights)."""
    parse = cli.build_parser().parse_args
    cfg = cli.train._train_config(parse(["train", "--space", "nb201", "--out", "o",
                                         "--op-weights", "nor_conv_3x3=3, skip_connect=1.5"]))
    assert cfg.op_weights == {"none": 0.0, "skip_connect": 1.5, "nor_conv_1x1": 0.0, "nor_conv_3x3": 3.0,
                              "avg_pool_3x3": 0.0}
    assert cli.train._train_config(parse(["train", "--space", "nb201", "--out", "o"])).op_weights == {
        "none": 2.0, "skip_connect": 2.0, "nor_conv_1x1": 7.0, "nor_conv_3x3": 7.0, "avg_pool_3x3": 2.0}
    uniform = parse(["train", "--space", "nb201", "--out", "o", "--op-weights", "uniform"])
    assert cli.train._train_config(uniform).op_weights is None
    assert cli.train._train_config(parse(["train", "--out", "o"])).op_weights is None  # the paper's space
    for bad, message in (("nor_conv_3x3", "expected op=weight pairs"), ("none=-1", "a finite number >= 0"),
                         (",", "at least one op=weight pair")):
        with pytest.raises(SystemExit):
            parse(["train", "--space", "nb201", "--out", "o", "--op-weights", bad])
        assert message in capsys.readouterr().err
    out = str(tmp_path / "run")
    for argv, message in ((["--space", "nb201", "--op-weights", "conv=1"], "unknown op 'conv' in the op weights"),
                          (["--op-weights", "none=1"], "op weights apply to the nb201 space only")):
        assert cli.main(["train", "--out", out, "--steps", "1", *argv]) == 2
        assert message in one_error_line(capsys, "train")


def test_version_and_help_show_defaults(capsys):
    from ghn_ext import __version__
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ghn_ext {__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("images per training step (default: 64)", "(default: 0.001)", "(default: 0)", "(default: 5)"):
        assert shown in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_bug_keeps_its_traceback_and_a_bad_input_is_one_line(monkeypatch, capsys):
    """Issue 30: every ValueError used to print one line, so an internal bug hid its traceback. Only
    InputError (what ghn_ext's own checks raise about what a user gave) and the other user errors do."""
    from ghn_ext.core.checks import InputError

    def fails_with(exc):
        def cmd(a):
            raise exc
        return cmd

    args = cli.build_parser().parse_args(["show"])
    monkeypatch.setattr(cli, "build_parser", lambda only=None: type("P", (), {"parse_args": lambda self, argv: args})())
    args.func = fails_with(InputError("--x must be 3"))
    assert cli.main([]) == 2 and one_error_line(capsys, "show") == "ghn show: error: --x must be 3\n"
    args.func = fails_with(ValueError("not enough values to unpack"))
    with pytest.raises(ValueError, match="not enough values to unpack"):
        cli.main([])


def test_info_says_what_runs(capsys, monkeypatch):
    """Issue 31: which kernels were compiled and whether the fallback is active, from the CLI and the API."""
    import ghn_ext
    from ghn_ext.ops import HAS_EXTENSION
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ghn_ext {ghn_ext.__version__}, torch ") and out.strip() == ghn_ext.info()
    if HAS_EXTENSION:
        assert "compiled kernels: CPU" in out and "propagate: cpu" in out and "fallback: not in use" in out
    else:
        assert "compiled kernels: none" in out and "fallback: active" in out
    monkeypatch.setenv("GHN_EXT_REFERENCE", "1")
    assert "pure-PyTorch fallback: forced by GHN_EXT_REFERENCE" in ghn_ext.info()


def test_data_download_fetches_with_torchvision_once_and_names_the_folder(tmp_path, monkeypatch, capsys):
    """Issue 31: the missing-data error said to pass download=True, which no flag did. `ghn data download`
    fetches with torchvision's downloader (faked here: no network in tests), and not again."""
    import numpy as np
    import torchvision.datasets
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append(download)
            if not download and not (Path(root) / "cifar-10-batches-py").is_dir():
                raise RuntimeError("Dataset not found or corrupted")
            (Path(root) / "cifar-10-batches-py").mkdir(exist_ok=True)
            n = 6 if train else 4
            self.data, self.targets = np.zeros((n, 32, 32, 3), np.uint8), list(range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    target = tmp_path / "cifar"
    assert cli.main(["data", "download", "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"CIFAR-10 downloaded to {target}" in out and f"GHN_DATA_DIR={target}" in out
    assert calls == [True, True]
    from ghn_ext.core.data import clear_cache
    clear_cache()
    assert cli.main(["data", "download", "--dir", str(target)]) == 0
    assert f"CIFAR-10 is already in {target}" in capsys.readouterr().out and calls[2:] == [False, False]


def test_data_download_failure_is_one_line(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(root, train, download):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    assert cli.main(["data", "download", "--dir", str(tmp_path / "c")]) == 2
    err = one_error_line(capsys, "data")
    assert "cannot load CIFAR-10" in err and "Temporary failure in name resolution" in err
