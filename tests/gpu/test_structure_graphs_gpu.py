"""The structure flow's kept graphs made beside the load (trellis.pipelines.structure_graphs, started by the app's
warm-up: desktop.jobs.warmup.GraphsBesideLoad): the loaded pipeline adopts them, its first job replays them without a
capture of its own, and every job's stage 1 equals the eager one bit for bit; fast paths on and off (tests/gpu:
skipped without CUDA)."""
import threading

import pytest
import torch

import trellis.pipelines as pipelines

from tests.helpers.gpu_inputs import structure_latent

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("fast", [True, False])
def test_graphs_made_beside_the_load_are_adopted_and_replay_the_eager_result(tiny_pipeline_dir, fast_on, fast):
    fast_on(fast, made_beside_the_load, tiny_pipeline_dir)


def made_beside_the_load(tiny_pipeline_dir):
    from desktop.jobs.warmup import GraphsBesideLoad

    graphs = GraphsBesideLoad("fp16", "none")
    log = []
    maker = threading.Thread(target=lambda: log.append(graphs.make("cuda", lambda: False)))
    maker.start()                                   # waits for the two networks, then captures beside the rest
    try:
        pipe = pipelines.TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir, device="cuda",
                                                                  on_model=graphs.on_model)
    finally:
        graphs.load_ended()
        maker.join()
    assert log and log[0].startswith("graphs ") and ", decoder " in log[0], log
    pipe.set_memory_policy(precision="fp16", offload="none")
    assert pipe.keep_structure_graphs(graphs.made)
    kept = graphs.made.graphed
    captured = {k for k, v in kept.graphs.items() if v is not None}
    assert len(captured) == 2, kept.graphs          # the CFG pair and the single batch

    cond = pipe.get_cond(torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0)))
    replayed = [structure_latent(pipe, cond, seed) for seed in (1, 2)]
    assert next(iter(pipe._kept_graphs.values()))[1] is kept
    assert {k for k, v in kept.graphs.items() if v is not None} == captured      # nothing new captured
    pipe.set_memory_policy(cuda_graphs=False)
    assert pipe._kept_graphs == {}
    for seed, got in zip((1, 2), replayed):
        assert torch.equal(got, structure_latent(pipe, cond, seed))


def test_graphs_of_weights_since_moved_are_not_adopted(tiny_pipeline_dir):
    from desktop.jobs.warmup import GraphsBesideLoad

    graphs = GraphsBesideLoad("fp16", "none")
    pipe = pipelines.TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir, device="cuda",
                                                              on_model=graphs.on_model)
    graphs.load_ended()
    assert graphs.make("cuda", lambda: False).startswith("graphs ")
    pipe.to("cpu").to("cuda")
    assert not pipe.keep_structure_graphs(graphs.made)
    assert pipe._kept_graphs == {}


def test_a_failed_decoder_warm_keeps_the_graphs(tiny_pipeline_dir, monkeypatch):
    """The occupancy decoder's first call beside the load fails: the log says so, and the graphs made before it are
    still adopted."""
    from desktop.jobs.warmup import GraphsBesideLoad
    from trellis.pipelines import structure_graphs

    def broken(*args, **kwargs):
        raise RuntimeError("decoder busy")
    monkeypatch.setattr(structure_graphs, "warm_decoder", broken)
    graphs = GraphsBesideLoad("fp16", "none")
    pipe = pipelines.TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir, device="cuda",
                                                              on_model=graphs.on_model)
    graphs.load_ended()
    done = graphs.make("cuda", lambda: False)
    assert done.startswith("graphs ") and "decoder failed: RuntimeError: decoder busy" in done, done
    pipe.set_memory_policy(precision="fp16", offload="none")
    assert graphs.made is not None and pipe.keep_structure_graphs(graphs.made)
