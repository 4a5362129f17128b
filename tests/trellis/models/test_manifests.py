"""Each network built full-size has exactly the reference's state-dict keys, shapes and dtypes."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

import trellis.models as models

from tests.helpers.repo import DATA
MANIFESTS = DATA / "state_dict"
KEYS = ["sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs",
        "slat_decoder_rf", "slat_decoder_mesh"]


@pytest.mark.parametrize("key", KEYS)
def test_full_size_model_matches_manifest(key):
    manifest = json.loads((MANIFESTS / f"{key}.json").read_text())
    config = json.loads(manifest["ckpt_json_text"])
    assert config["name"] == manifest["class_name_in_ckpt_json"]
    with torch.device("meta"):
        model = models.from_config(config)
    state = model.state_dict()
    expected = {t["key"]: t for t in manifest["tensors"]}
    assert set(state) == set(expected)
    for k, t in expected.items():
        assert list(state[k].shape) == t["shape"], k
        assert str(state[k].dtype) == "torch." + t["dtype"], k
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == {k for k, t in expected.items() if t["kind"] == "buffer"}
    assert sum(v.numel() for v in state.values()) == manifest["total_numel"]


def test_published_ckpt_jsons_build_on_meta():
    """Every published ckpt JSON (text verified by its sha256) builds; the training encoders are refused clearly."""
    files = json.loads((MANIFESTS / "_hf_repo_files.json").read_text())["files"]
    built = 0
    for name, entry in files.items():
        if not name.endswith(".json"):
            continue
        assert hashlib.sha256(entry["text"].encode()).hexdigest() == entry["sha256"], name
        config = json.loads(entry["text"])
        if name == "pipeline.json":
            continue
        if config["name"] in ("SparseStructureEncoder", "SLatEncoder"):
            with pytest.raises(ValueError, match="unknown model class"):
                models.from_config(config)
            continue
        with torch.device("meta"):
            models.from_config(config)
        built += 1
    assert built == 6


def test_elastic_alias_and_unknown_class():
    assert models.model_class("ElasticSLatFlowModel") is models.SLatFlowModel
    with pytest.raises(ValueError, match="unknown model class"):
        models.model_class("NoSuchModel")


TEXT_MANIFESTS = sorted((DATA / "state_dict_text").glob("*.json"))


@pytest.mark.parametrize("path", TEXT_MANIFESTS, ids=[p.stem for p in TEXT_MANIFESTS])
def test_full_size_text_flow_matches_manifest(path):
    """The text pipelines' flows (B / L / XL, text facts §2) built on the meta device from their ckpt JSON."""
    manifest = json.loads(path.read_text())
    config = json.loads(manifest["ckpt_json_text_assumed"])
    assert config["name"] == manifest["class_name_in_ckpt_json"] and config["args"] == manifest["args"]
    with torch.device("meta"):
        model = models.from_config(config)
    state = model.state_dict()
    expected = {t["key"]: t for t in manifest["tensors"]}
    assert set(state) == set(expected)
    for k, t in expected.items():
        assert list(state[k].shape) == t["shape"], k
        assert str(state[k].dtype) == "torch." + t["dtype"], k
    assert sum(v.numel() for v in state.values()) == manifest["total_numel"]
