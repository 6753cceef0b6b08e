"""Issue 42: a search space is one registered spec. The code above ghn_ext/spaces asks it instead of
branching on a space's name; TrainConfig and GHNConfig take the recipe `ghn train` trains; a GHN's
checkpoint says how it scores, and older ones read back with the behaviour of their time."""
from __future__ import annotations

import ast
import random
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch

from ghn_ext import cli
from ghn_ext.core.files import with_checksum
from ghn_ext.models import ghn as ghn_module
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.models.scoring import ScoringConfig
from ghn_ext.spaces import SPACES, get_space, make_sampler, nb201, spec
from ghn_ext.spaces.reading import parse_architecture
from ghn_ext.workflows import train as train_module
from ghn_ext.workflows.train import TrainConfig

PACKAGE = Path(__file__).resolve().parents[1] / "ghn_ext"


@pytest.mark.parametrize("name", SPACES)
def test_every_space_is_one_registered_spec_whose_defaults_are_settings(name):
    space = get_space(name)
    assert space.name == name and space.summary and space.text_format
    assert set(space.train_defaults) <= set(train_module.SPACE_SETTINGS), "train_defaults must be TrainConfig settings"
    assert set(space.ghn_defaults) <= set(ghn_module.SPACE_SETTINGS), "ghn_defaults must be GHNConfig settings"
    assert space.signal in ("accuracy", "loss")
    graph = space.sampler()(random.Random(0))
    assert graph.space == name
    described = space.describe(graph)
    if described is not None:  # a space with a text format rebuilds what it records
        assert space.from_description(described, **space.skeleton()).stable_hash() == graph.stable_hash()


def test_an_unknown_space_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown search space 'imagenet'; choose one of classification, nb201, anytime"):
        get_space("imagenet")


def _literal_space_comparisons(path: Path) -> list[str]:
    """`x == "nb201"`-like comparisons (and `in` tuples of names) against a registered space's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                names = ([side] if isinstance(side, ast.Constant) else
                         list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [])
                if any(isinstance(n, ast.Constant) and n.value in SPACES for n in names):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_no_code_outside_the_spaces_branches_on_a_space_name():
    outside = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "spaces"]
    branches = [hit for p in outside for hit in _literal_space_comparisons(p)]
    assert branches == [], f"ask the space's spec instead: {branches}"


@pytest.mark.parametrize("name", [s for s in SPACES if not get_space(s).anytime])
def test_train_config_of_a_space_is_what_ghn_train_trains(name):
    args = cli.build_parser().parse_args(["train", "--space", name, "--out", "x"])
    assert cli.train._train_config(args) == TrainConfig(space=name)


def test_the_nb201_recipe():
    cfg = TrainConfig(space="nb201")
    assert (cfg.steps, cfg.channels, cfg.cells_per_stage, cfg.snapshot_every) == (20000, 16, 1, 3000)
    assert cfg.op_weights == nb201.check_op_weights(nb201.TRAIN_OP_WEIGHTS)
    assert (cfg.ghn.tile_channels, cfg.ghn.kernel) == (64, 3)
    assert TrainConfig(space="nb201", op_weights="uniform").op_weights is None
    classification = TrainConfig()
    assert (classification.steps, classification.num_nodes, classification.cells_per_stage) == (1000, 7, 5)
    assert (classification.ghn.tile_channels, classification.ghn.kernel) == (32, 7)


def test_a_uniform_run_reads_back_uniform():
    """Saved, uniform edge ops are None; read back they stay uniform, not the space's weighted default."""
    cfg = TrainConfig(space="nb201", op_weights="uniform", steps=10)
    assert TrainConfig.from_dict(asdict(cfg)) == cfg
    weighted = TrainConfig(space="nb201", steps=10)
    assert TrainConfig.from_dict(asdict(weighted)) == weighted


def test_a_config_saved_before_the_tile_was_named_reads_back():
    saved = asdict(TrainConfig(space="nb201", steps=10))
    saved["ghn"] = {("block_channels" if k == "tile_channels" else k): v for k, v in saved["ghn"].items()}
    assert TrainConfig.from_dict(saved).ghn.tile_channels == 64
    saved["ghn"].pop("block_channels")  # before the GHN's settings were all saved: the default of the time
    assert TrainConfig.from_dict(saved).ghn.tile_channels == 32


def test_a_checkpoint_records_how_its_ghn_scores(tmp_path):
    ghn = GraphHyperNetwork(GHNConfig(space="nb201", tile_channels=4, T=1))
    assert ghn.scoring == ScoringConfig("loss", {"channels": 16, "cells_per_stage": 5})  # untrained: the space's
    ghn.scoring = ScoringConfig("accuracy", {"channels": 8, "cells_per_stage": 2}, image_batch=50)
    ghn.save(tmp_path / "ghn.pt")
    assert GraphHyperNetwork.load(tmp_path / "ghn.pt").scoring == ghn.scoring


def test_an_old_checkpoint_scores_as_it_did(tmp_path):
    """Written before checkpoints recorded their scoring and before the tile was named: the skeleton of
    its training settings (16 channels, 5 cells per stage where they are missing), its space's signal."""
    ghn = GraphHyperNetwork(GHNConfig(space="nb201", tile_channels=4, T=1))
    ghn.save(tmp_path / "new.pt")
    old = torch.load(tmp_path / "new.pt", weights_only=True)
    for train_config, skeleton in (({"channels": 8, "cells_per_stage": 1}, {"channels": 8, "cells_per_stage": 1}),
                                   (None, {"channels": 16, "cells_per_stage": 5})):
        ckpt = {k: v for k, v in old.items() if k not in ("scoring", "sha256")}
        ckpt["config"] = {("block_channels" if k == "tile_channels" else k): v for k, v in ckpt["config"].items()}
        if train_config:
            ckpt["train_config"] = train_config
        torch.save(with_checksum(ckpt), tmp_path / "old.pt")
        loaded = GraphHyperNetwork.load(tmp_path / "old.pt")
        assert loaded.config.tile_channels == 4
        assert loaded.scoring == ScoringConfig("loss", skeleton)


def test_training_records_the_skeleton_it_trained_in(data_dir, tmp_path):
    import ghn_ext
    ghn = ghn_ext.train(tmp_path / "run", "nb201", steps=2, channels=4, eval_archs=1, eval_images=20,
                        ghn=GHNConfig(space="nb201", tile_channels=4, T=1), data_dir=data_dir, progress=False)
    assert ghn.scoring.skeleton == {"channels": 4, "cells_per_stage": 1}
    assert GraphHyperNetwork.load(tmp_path / "run" / "ghn.pt").scoring == ghn.scoring


def test_the_old_tile_flag_still_works_and_says_so(capsys):
    args = cli.build_parser().parse_args(["train", "--out", "x", "--block-channels", "8"])
    assert args.tile_channels == 8 and cli.train._train_config(args).ghn.tile_channels == 8
    assert "--block-channels is deprecated; use --tile-channels" in capsys.readouterr().err


@pytest.fixture()
def a_new_space():
    """A space registered by one class, as a new module would: NAS-Bench-201 cells at another width."""
    class Narrow(nb201.NB201Space):
        name = "nb201_narrow"
        skeleton_defaults = {"channels": 4, "cells_per_stage": 1}
        train_defaults = {"steps": 3}
    space = spec.register_space(Narrow())
    yield space
    del spec._REGISTRY[space.name]


def test_adding_a_space_is_one_class_and_one_registration(a_new_space):
    graph = make_sampler("nb201_narrow")(random.Random(0))
    assert graph.meta["channels"] == 4
    assert TrainConfig(space="nb201_narrow").steps == 3 and GHNConfig(space="nb201_narrow").tile_channels == 64
    assert parse_architecture(nb201.to_string(("none",) * 6), "nb201_narrow").meta["channels"] == 4
    ghn = GraphHyperNetwork(GHNConfig(space="nb201_narrow", tile_channels=4, T=1))
    assert ghn.scoring.skeleton == {"channels": 4, "cells_per_stage": 1}


def test_scoring_settings_are_checked():
    for bad, match in (({"signal": "speed"}, "unknown scoring signal"), ({"image_batch": 0}, "image_batch"),
                       ({"skeleton": {"channels": -1}}, "channels"), ({"skeleton": [1]}, "mapping")):
        with pytest.raises(ValueError, match=match):
            ScoringConfig.from_dict({"signal": "loss", "skeleton": {}, "image_batch": 100, **bad})
    with pytest.raises(ValueError, match="mapping of signal"):
        ScoringConfig.from_dict({"signal": "loss", "extra": 1})
    assert [f.name for f in fields(ScoringConfig)] == ["signal", "skeleton", "image_batch"]
