"""Pretrained GHNs shipped inside the package (ghn_ext.models.pretrained): exported with their provenance,
loaded by name with a checksum check, refused when damaged or unreadable; used by `ghn score` and
`ghn search` when no --ckpt is given."""
from __future__ import annotations

import json

import pytest
import torch

from ghn_ext import cli

from ghn_ext.models import pretrained, shipping
from ghn_ext.models.scoring import ScoringConfig
from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.spaces import nb201
from test_cli import NB201_ARCHS, one_error_line


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """An empty checkpoint folder in place of the package's, and a tiny nb201 GHN exported into it."""
    folder = tmp_path / "checkpoints"
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", folder)
    monkeypatch.setattr(pretrained, "MANIFEST", folder / "manifest.json")
    torch.manual_seed(0)
    ghn = GraphHyperNetwork(GHNConfig(space="nb201", tile_channels=4, T=1))
    ghn.scoring = ScoringConfig.for_space("nb201", {"channels": 4, "cells_per_stage": 1})  # as training sets it
    source = tmp_path / "run" / "ghn.pt"
    source.parent.mkdir()
    ghn.save(source, extra={"train_config": {"channels": 4, "cells_per_stage": 1}, "optimizer": {"junk": 1}})
    entry = shipping.export("nb201", source, "ghn train --space nb201", "CIFAR-10 train split", {"spearman": 0.5})
    return folder, ghn, entry


def test_export_records_provenance_and_a_checksum(shipped):
    folder, _, entry = shipped
    saved = json.loads((folder / "manifest.json").read_text())
    assert saved == {"nb201": entry}
    assert entry["sha256"] == pretrained.sha256(folder / "nb201.pt")
    assert entry["command"] == "ghn train --space nb201" and entry["spearman"] == 0.5 and entry["space"] == "nb201"
    assert all((folder / f).stat().st_mode & 0o777 == 0o644 for f in ("nb201.pt", "manifest.json"))
    ckpt = torch.load(folder / "nb201.pt", weights_only=True)
    assert "optimizer" not in ckpt and ckpt["train_config"] == {"channels": 4, "cells_per_stage": 1}


def test_pretrained_by_name_is_the_exported_ghn(shipped):
    _, ghn, _ = shipped
    loaded = GraphHyperNetwork.pretrained("nb201")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ghn.state_dict().values()))


def test_unknown_name_lists_what_ships(shipped):
    with pytest.raises(CheckpointError, match=r"no pretrained GHN named 'imagenet' \(shipped: nb201\)"):
        GraphHyperNetwork.pretrained("imagenet")


def test_damaged_file_is_refused(shipped):
    folder, _, _ = shipped
    data = bytearray((folder / "nb201.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "nb201.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        GraphHyperNetwork.pretrained("nb201")


def test_missing_file_and_unreadable_format_are_refused(shipped):
    folder, _, entry = shipped
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"nb201": {**entry, "format": "ghn_ext.ghn/2", "requires": ">= 0.3"}}))
    with pytest.raises(CheckpointError, match=r"format 'ghn_ext.ghn/2', which this ghn_ext cannot read .* install "
                                              r"ghn_ext >= 0.3"):
        GraphHyperNetwork.pretrained("nb201")
    manifest.write_text(json.dumps({"nb201": entry}))
    (folder / "nb201.pt").unlink()
    with pytest.raises(CheckpointError, match="is missing; reinstall"):
        GraphHyperNetwork.pretrained("nb201")
    manifest.write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest .* is damaged"):
        GraphHyperNetwork.pretrained("nb201")


def test_score_without_ckpt_uses_the_shipped_ghn_and_says_so(shipped, data_dir, tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text(NB201_ARCHS[0] + "\n")
    scores = tmp_path / "s.jsonl"
    assert cli.main(["score", "--space", "nb201", "--archs", str(archs), "--val-images", "50",
                     "--data-dir", data_dir, "--output", str(scores)]) == 0
    assert "using the pretrained nb201 GHN shipped with ghn_ext" in capsys.readouterr().out
    row = json.loads(scores.read_text())
    assert row["hash"] == nb201.network(NB201_ARCHS[0], 4, 1).stable_hash()  # its training skeleton
    # and by name, the same scores
    assert cli.main(["score", "--space", "nb201", "--ckpt", "nb201", "--archs", str(archs), "--val-images", "50",
                     "--data-dir", data_dir, "--output", str(scores)]) == 0
    assert json.loads(scores.read_text()) == row


def test_search_without_ckpt_for_a_space_with_no_shipped_ghn(shipped, data_dir, tmp_path, capsys):
    # the fixture's folder ships an nb201 GHN only
    assert cli.main(["search", "--space", "classification", "--out", str(tmp_path / "s"), "--data-dir", data_dir]) == 2
    assert "no pretrained GHN ships for the 'classification' space" in one_error_line(capsys, "search")


def test_the_package_manifest_matches_its_files():
    """Every GHN the package ships loads by name, checksum checked: one per space the issue asks for."""
    assert {"nb201", "classification"} <= set(pretrained.manifest())
    for name, entry in pretrained.manifest().items():
        ghn = GraphHyperNetwork.pretrained(name)
        assert ghn.config.space == entry["space"]
        assert entry["command"] and entry["data"]


def test_search_combined_with_synflow_prints_its_ranking_key(shipped, data_dir, tmp_path, capsys):
    assert cli.main(["search", "--space", "nb201", "--out", str(tmp_path / "s"), "--num-archs", "3", "--val-images",
                     "50", "--combine", "synflow", "--data-dir", data_dir, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(l for l in lines if l.lstrip().startswith("rank"))
    assert header.split()[:3] == ["rank", "GHN+synflow", "-val"]
    ranking = json.loads((tmp_path / "s" / "ranking.json").read_text())["ranking"]
    first = lines[lines.index(header) + 1].split()
    assert float(first[1]) == pytest.approx(ranking[0]["combined"], abs=1e-4)
