"""TRELLIS.2's checkpoints against their manifests (tests/data/state_dict_trellis2: copies of the facts' manifests,
TRELLIS.2 facts §17): every network built full-size on the meta device holds exactly the manifest's keys, shapes
and in-memory dtypes; every manifest loads strictly, at full size through a real (sparse) file's header and at a
small width through a real file of the manifest's names and file dtypes; a damaged file's error names the file and
the tensor."""
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import trellis.models as models
from trellis.models.device_load import tensor_spans

from tests.helpers.repo import DATA

MANIFESTS = sorted((DATA / "state_dict_trellis2").glob("*.json"))
IDS = [p.stem for p in MANIFESTS]
SAFETENSORS_NAMES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def manifest_of(path: Path) -> tuple[dict, dict]:
    manifest = json.loads(path.read_text())
    config = json.loads(manifest["ckpt_json_text"])
    assert config["name"] == manifest["class_name_in_ckpt_json"] and config["args"] == manifest["args"]
    return manifest, config


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def test_every_manifest_of_the_facts_is_here():
    assert len(MANIFESTS) == 10
    flows = [p for p in MANIFESTS if "_dit_" in p.name]
    assert len(flows) == 5 and all(json.loads(p.read_text())["num_tensors_in_file"] == 640 for p in flows)


@pytest.mark.parametrize("path", MANIFESTS, ids=IDS)
def test_full_size_network_matches_manifest(path):
    manifest, config = manifest_of(path)
    with torch.device("meta"):
        model = models.from_config(config)
    state = model.state_dict()
    expected = {t["key"]: t for t in manifest["tensors"]}
    assert set(state) == set(expected) and len(state) == manifest["num_tensors"]
    for k, t in expected.items():
        assert list(state[k].shape) == t["shape"], k
        assert dtype_name(state[k]) == t["dtype"], k
    assert {n for n, _ in model.named_buffers()} == {k for k, t in expected.items() if t["kind"] == "buffer"}
    assert sum(v.numel() for v in state.values()) == manifest["total_numel"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    computed = set(getattr(model, "computed_buffers", ()))
    assert computed == {k for k, t in expected.items() if not t["in_file"]}


def write_sparse_file(path: Path, manifest: dict) -> int:
    """A safetensors file whose header lists the manifest's tensors at full size in their file dtypes and whose data
    section is a hole (no disk space, reads as zeros). Returns the data section's size."""
    header, offset = {}, 0
    for t in manifest["tensors"]:
        if not t["in_file"]:
            continue
        size = torch.empty((), dtype=getattr(torch, t["file_dtype"])).element_size()
        for d in t["shape"]:
            size *= d
        header[t["key"]] = {"dtype": SAFETENSORS_NAMES[t["file_dtype"]], "shape": t["shape"],
                            "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return offset


@pytest.mark.parametrize("path", MANIFESTS, ids=IDS)
def test_full_size_file_header_passes_the_strict_loader(path, tmp_path):
    """The loader's checks (keys, shapes, dtypes that cast) at full size: the tensors of a real file's header, as meta
    tensors, into the meta-built network. The payload is the facts' expected byte count."""
    manifest, config = manifest_of(path)
    file = tmp_path / "full.safetensors"
    payload = write_sparse_file(file, manifest)
    assert payload == manifest["file_payload_bytes_expected"]
    with open(file, "rb") as f:
        spans, _, size = tensor_spans(f, file)
    assert size == payload and len(spans) == manifest["num_tensors_in_file"]
    state = {name: torch.empty(shape, dtype=dtype, device="meta") for name, (dtype, shape, _, _) in spans.items()}
    with torch.device("meta"):
        model = models.from_config(config)
    models.load_weights(model, str(file), state=state)
    del state[next(iter(state))]
    with pytest.raises(ValueError, match="missing"):
        models.load_weights(model, str(file), state=state)


def small_args(args: dict) -> dict:
    """The same network at a small width: every key name and count kept (blocks, levels), every width shrunk."""
    small = dict(args)
    if isinstance(args.get("model_channels"), int):            # flows: 12 heads of 8 channels
        small.update(model_channels=96, cond_channels=32)
    elif "model_channels" in args:                               # SC-VAEs: widths / 8
        small["model_channels"] = [c // 8 for c in args["model_channels"]]
    if "channels" in args:                                       # the v1 structure decoder: group norms of 32
        small["channels"] = [64, 32, 32]
    return small


def write_small_checkpoint(folder: Path, manifest: dict, config: dict, seed: int = 0) -> tuple[str, dict]:
    """`<stem>.json` + `<stem>.safetensors` with the manifest's names and file dtypes, shaped as the network at a
    small width, random values. Returns the path prefix and the file's tensors."""
    small = {"name": config["name"], "args": small_args(config["args"])}
    shapes = {k: v.shape for k, v in models.from_config(small, init=False).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    tensors = {t["key"]: (0.1 * torch.randn(shapes[t["key"]], generator=g)).to(getattr(torch, t["file_dtype"]))
               for t in manifest["tensors"] if t["in_file"]}
    prefix = folder / Path(manifest["checkpoint_stem"]).name
    prefix.with_suffix(".json").write_text(json.dumps(small))
    save_file(tensors, str(prefix) + ".safetensors")
    return str(prefix), tensors


@pytest.mark.parametrize("path", MANIFESTS, ids=IDS)
def test_every_manifest_loads_from_a_real_file(path, tmp_path):
    manifest, config = manifest_of(path)
    prefix, tensors = write_small_checkpoint(tmp_path, manifest, config)
    model = models.from_pretrained(prefix)
    state = model.state_dict()
    for t in manifest["tensors"]:
        k, value = t["key"], state[t["key"]]
        assert dtype_name(value) == t["dtype"], k
        if t["in_file"]:
            assert torch.equal(value, tensors[k].to(value.dtype)), k
    if "rope_phases" in state:                    # recomputed, not read: the identity pair and unit phases
        assert state["rope_phases"].dtype == torch.complex64
        assert torch.allclose(state["rope_phases"].abs(), torch.ones(()))


@pytest.fixture(scope="module")
def ss_flow_file(tmp_path_factory):
    path = DATA / "state_dict_trellis2" / "ss_flow_img_dit_1_3B_64_bf16.json"
    manifest, config = manifest_of(path)
    prefix, tensors = write_small_checkpoint(tmp_path_factory.mktemp("ss_flow"), manifest, config)
    return prefix, tensors


def rewrite(prefix: str, tensors: dict, dest: Path) -> str:
    out = dest / "ss_flow"
    out.with_suffix(".json").write_text(Path(prefix + ".json").read_text())
    save_file(tensors, str(out) + ".safetensors")
    return str(out)


def test_a_cut_short_file_names_the_file_and_the_tensor(ss_flow_file, tmp_path):
    prefix, tensors = ss_flow_file
    out = rewrite(prefix, tensors, tmp_path)
    data = Path(out + ".safetensors").read_bytes()
    Path(out + ".safetensors").write_bytes(data[:-100])
    with pytest.raises(models.WeightsFileError, match=r"ss_flow\.safetensors: the file is damaged or incomplete "
                                                      r"\(tensor \S+ ends at byte"):
        models.from_pretrained(out)


@pytest.mark.parametrize("damage, message", [
    ("missing", r"missing \['blocks\.7\.cross_attn\.k_rms_norm\.gamma'\]"),
    ("extra", r"unexpected \['blocks\.30\.modulation'\]"),
    ("shape", r"tensor blocks\.3\.mlp\.mlp\.0\.weight has shape"),
    ("dtype", r"tensor out_layer\.bias is int32, the model holds float32"),
])
def test_a_wrong_file_names_the_file_and_the_key(ss_flow_file, tmp_path, damage, message):
    prefix, tensors = ss_flow_file
    tensors = dict(tensors)
    if damage == "missing":
        del tensors["blocks.7.cross_attn.k_rms_norm.gamma"]
    elif damage == "extra":
        tensors["blocks.30.modulation"] = tensors["blocks.0.modulation"].clone()
    elif damage == "shape":
        tensors["blocks.3.mlp.mlp.0.weight"] = tensors["blocks.3.mlp.mlp.0.weight"][:-1].contiguous()
    else:
        tensors["out_layer.bias"] = tensors["out_layer.bias"].to(torch.int32)
    out = rewrite(prefix, tensors, tmp_path)
    with pytest.raises(ValueError, match=r"ss_flow\.safetensors.*" + message):
        models.from_pretrained(out)


def test_computed_phases_in_a_file_are_not_read(ss_flow_file, tmp_path):
    """A file that carries the RoPE phases (e.g. saved from a whole state dict) loads; the network keeps its own."""
    prefix, tensors = ss_flow_file
    phases = models.from_pretrained(prefix).rope_phases
    wrong = torch.view_as_real(torch.zeros_like(phases)).contiguous()
    out = rewrite(prefix, {**tensors, "rope_phases": wrong}, tmp_path)
    assert torch.equal(models.from_pretrained(out).rope_phases, phases)
