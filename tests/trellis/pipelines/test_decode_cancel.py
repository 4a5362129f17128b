"""A cancel asked while a decoder runs on the CPU stops it at its next layer (trellis.core.module_cancel, used by
the pipelines' decode_slat): a large mesh decode no longer makes a cancel wait for the whole network."""
import time

import pytest

from tests.helpers.images import object_image
from trellis.core.callbacks import Cancelled


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_dir):
    from trellis.pipelines import TrellisImageTo3DPipeline

    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


def test_a_cancel_inside_the_mesh_decoder_stops_it_at_its_next_layer(pipeline):
    decoder = pipeline.models["slat_decoder_mesh"]
    first, *rest = [m for m in decoder.modules() if m is not decoder and next(m.children(), None) is None]
    asked = {}

    def arm(_module, _inputs):          # the decoder's first layer has started: the user presses Cancel now
        asked.setdefault("at", time.perf_counter())
    handles = [first.register_forward_pre_hook(arm),
               rest[-1].register_forward_pre_hook(lambda _m, _i: asked.setdefault("last layer ran", True))]
    try:
        with pytest.raises(Cancelled):
            pipeline.run(object_image(), seed=1, formats=["mesh"], preprocess_image=False,
                         sparse_structure_sampler_params={"steps": 2}, slat_sampler_params={"steps": 2},
                         cancel=lambda: "at" in asked)
    finally:
        for handle in handles:
            handle.remove()
    assert "at" in asked and time.perf_counter() - asked["at"] < 2.0
    assert "last layer ran" not in asked                                     # stopped inside the network
    assert not any(m._forward_pre_hooks for m in decoder.modules())          # the checks are gone after it
    out = pipeline.run(object_image(), seed=1, formats=["mesh"], preprocess_image=False,
                       sparse_structure_sampler_params={"steps": 2}, slat_sampler_params={"steps": 2},
                       cancel=lambda: False)
    assert out["mesh"][0].vertices.shape[0] > 0


def test_the_surface_extraction_stops_at_the_active_cancel():
    import torch

    from trellis.core.module_cancel import checked_between_modules
    from trellis.representations.mesh.flexicubes import extract_mesh

    res = 16
    g = torch.Generator().manual_seed(0)
    coords = torch.stack(torch.meshgrid(*[torch.arange(4, 12)] * 3, indexing="ij"), -1).reshape(-1, 3)
    feats = torch.randn(len(coords), 101, generator=g)
    feats[:, :8] = (coords.float() - 8).norm(dim=1, keepdim=True) - 3          # a ball's signed distance
    with checked_between_modules(torch.nn.Linear(1, 1), lambda: True), pytest.raises(Cancelled):
        extract_mesh(coords, feats, res)
    mesh = extract_mesh(coords, feats, res)             # no pass under way: nothing asks
    assert mesh.faces.shape[0] > 0
