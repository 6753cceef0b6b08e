"""Issue 42: the Python API ranks exactly as the command line does. The README's first example runs as
written and gives `ghn score`'s scores; the Spearman it gives on a fixed part of the NAS-Bench-201 dev
table is `ghn correlate`'s; a cell given as an ArchGraph of any skeleton scores where its GHN was trained."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ghn_ext
from ghn_ext import cli
from ghn_ext.core.rank_measures import ranking_measures
from ghn_ext.spaces import nb201

README = Path(__file__).resolve().parents[1] / "README.md"
CELLS_OF_THE_TABLE = 12  # the fixed subset: the dev table's first cells
IMAGES = 200


def readme_scoring_example() -> str:
    """The first Python block of the README's Python API section, as written."""
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture()
def in_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv("GHN_DATA_DIR", data_dir)  # where a user's environment points
    return data_dir


def test_the_readme_example_scores_as_ghn_score_does(in_data_dir, tmp_path, capsys):
    example = readme_scoring_example()
    assert "ghn_ext.score(" in example and len(example.strip().splitlines()) <= 8
    names: dict = {}
    exec(compile(example, str(README), "exec"), names)  # noqa: S102 - the README's own code
    cells, scores = names["cells"], names["scores"]
    assert names["best"] == cells[scores.index(max(scores))]
    archs = tmp_path / "cells.txt"
    archs.write_text("\n".join(cells) + "\n")
    output = tmp_path / "scores.jsonl"
    assert cli.main(["score", "--space", "nb201", "--archs", str(archs), "--val-images", "1000", "--quiet",
                     "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["arch"] for r in rows] == cells
    assert [r["score"] for r in rows] == pytest.approx(scores, rel=1e-6, abs=1e-7)
    assert all(r["signal"] == "loss" for r in rows)


def test_the_api_spearman_on_the_dev_table_is_ghn_correlates(in_data_dir, shared_nb201_table, tmp_path, capsys):
    table = shared_nb201_table
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:1 + CELLS_OF_THE_TABLE]]
    cells = [r["arch"] for r in rows]
    truth = [float(r["cifar10_test_200ep"]) for r in rows]
    api = ranking_measures(ghn_ext.score(cells, ghn="nb201", images=IMAGES), truth)["spearman"]
    out = tmp_path / "corr"
    assert cli.main(["correlate", "--space", "nb201", "--groundtruth", str(table), "--cells", str(CELLS_OF_THE_TABLE),
                     "--val-images", str(IMAGES), "--baselines", "", "--ghn", "GHN=nb201", "--resamples", "10",
                     "--out", str(out), "--quiet"]) == 0
    cli_rows = json.loads((out / "table_cifar10_test_200ep.json").read_text())
    (ghn_row,) = [r for r in cli_rows if r["predictor"].startswith("GHN (")]
    assert api == pytest.approx(ghn_row["spearman"], abs=1e-12)


def test_a_cell_scores_the_same_from_any_skeleton(in_data_dir):
    """What went wrong before: nb201.network builds the benchmark's 5 cells per stage, and the API scored
    that network, not the 1-cell skeleton the shipped GHN scores in (Spearman 0.23 against 0.915)."""
    cells = [nb201.to_string(ops) for ops in (("nor_conv_3x3",) * 6, ("skip_connect",) * 6)]
    ghn = ghn_ext.GraphHyperNetwork.pretrained("nb201")
    assert ghn.scoring.skeleton == {"channels": 16, "cells_per_stage": 1} and ghn.scoring.signal == "loss"
    by_text = ghn.score(cells, images=100)
    by_graph = ghn.score([nb201.network(c) for c in cells], images=100)  # the benchmark's own skeleton
    assert by_graph == by_text
    in_five = ghn.score(cells, images=100, skeleton={"cells_per_stage": 5})
    assert in_five != by_text  # asked for, the benchmark's skeleton is scored


def test_score_refuses_what_it_cannot_score(in_data_dir):
    ghn = ghn_ext.GraphHyperNetwork.pretrained("nb201")
    with pytest.raises(ValueError, match="architecture 0 is a int"):
        ghn.score([3])
    with pytest.raises(ValueError, match="the validation split holds 5000"):
        ghn.score(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"], images=6000)
    with pytest.raises(ghn_ext.GraphError, match="unknown op"):
        ghn.score(["|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
    with pytest.raises(Exception, match="no pretrained GHN ships for the 'anytime' space"):
        ghn_ext.score(["x"], space="anytime")


def test_the_public_api_is_importable_from_the_top_and_documented():
    for name in ("GraphHyperNetwork", "GHNConfig", "ScoringConfig", "TrainConfig", "SearchConfig", "train", "score",
                 "run_search", "get_space", "SPACES"):
        assert name in ghn_ext.__all__
        obj = getattr(ghn_ext, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"ghn_ext.{name} has no docstring"
    assert ghn_ext.spaces.get_space("nb201").name == "nb201"


def test_a_search_scores_its_candidates_as_ghn_score_does(in_data_dir, tmp_path):
    """`ghn search` scores in parts of the images (adaptive rounds) with the GHN's signal and skeleton; a
    candidate's last-round score is ghn.score's over the same images."""
    from ghn_ext.workflows.search import SearchConfig, run_search
    ghn = ghn_ext.GraphHyperNetwork.pretrained("nb201")
    ranking = run_search(ghn, SearchConfig(num_archs=6, val_images=300, min_images=100, min_final=2), tmp_path,
                         progress=False)
    finalists = [r for r in ranking if r["images"] == 300]
    assert len(finalists) == 2 and all(r["signal"] == "loss" for r in ranking)
    assert ghn.score([r["arch"] for r in finalists], images=300) == pytest.approx(
        [r["score"] for r in finalists], rel=1e-6)
