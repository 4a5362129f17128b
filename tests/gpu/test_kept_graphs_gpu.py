"""The sparse-structure flow's CUDA graphs kept from job to job (MemoryPolicy cuda_graphs "structure", the resident
preset's): replays give the eager result bit for bit, a later job captures nothing new, and moving the weights drops
them (tests/gpu: skipped without CUDA)."""
import pytest
import torch

import trellis.pipelines as pipelines

from tests.helpers.gpu_inputs import structure_latent

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

def test_kept_structure_graphs_replay_the_eager_result(tiny_pipeline_dir):
    pipe = pipelines.from_pretrained(tiny_pipeline_dir).to("cuda")
    pipe.set_memory_policy(precision="fp16", offload="none", cuda_graphs=False)
    cond = pipe.get_cond(torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0)))
    eager = [structure_latent(pipe, cond, seed) for seed in (1, 2, 3)]
    assert pipe._kept_graphs == {}

    pipe.set_memory_policy(cuda_graphs="structure")
    assert pipe.memory_policy.cuda_graphs == "structure"
    first = structure_latent(pipe, cond, 1)                  # two eager calls per shape, then a capture and replays
    (weights, kept), = pipe._kept_graphs.values()
    captured = {k for k, v in kept.graphs.items() if v is not None}
    assert captured, "the guided forward was not captured"
    assert torch.equal(first, eager[0])
    for seed, want in zip((2, 3), eager[1:]):         # later jobs: the same GraphedFlow, the same graphs replayed
        assert torch.equal(structure_latent(pipe, cond, seed), want)
        assert next(iter(pipe._kept_graphs.values()))[1] is kept
    assert captured <= {k for k, v in kept.graphs.items() if v is not None}

    pipe.to("cpu").to("cuda")                         # weights at new addresses: nothing old replays
    assert pipe._kept_graphs == {}
    assert torch.equal(structure_latent(pipe, cond, 2), eager[1])
    pipe.release_graphs()
    assert pipe._kept_graphs == {}


def _image(seed):
    return torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("graphs", ["structure", True])
def test_graphs_and_the_context_cache_follow_each_jobs_condition(tiny_pipeline_dir, graphs):
    """Resident runs keep each run's condition-only tensors (modules.context_cache: the cross-attentions' keys and
    values); a graph is never captured reading them. Kept graphs (stage 1) and per-run graphs (stage 2, True) give,
    job after job with a new image each time, what eager runs without the cache give, bit for bit."""
    pipe = pipelines.from_pretrained(tiny_pipeline_dir).to("cuda")
    pipe.set_memory_policy(precision="fp16", offload="none", cuda_graphs=False)
    conds = [pipe.get_cond(_image(seed)) for seed in (4, 5, 6)]
    pipe._cache_context = lambda policy: False
    eager = [structure_latent(pipe, cond, 7) for cond in conds]
    del pipe._cache_context
    assert pipe._cache_context(pipe.memory_policy)

    pipe.set_memory_policy(cuda_graphs=graphs)
    for cond, want in zip(conds, eager):
        assert torch.equal(structure_latent(pipe, cond, 7), want)
    (_, kept), = pipe._kept_graphs.values()
    assert any(v is not None for v in kept.graphs.values())

    coords = torch.argwhere(torch.rand(1, 16, 16, 16, generator=torch.Generator().manual_seed(8)) < 0.3)
    coords = coords.int().cuda()

    def slat(cond):
        with torch.no_grad():
            out = pipe.sample_slat(cond, coords, {"steps": 6, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0]},
                                   generator=torch.Generator().manual_seed(9))
        return out.feats

    pipe.set_memory_policy(cuda_graphs=False)
    pipe._cache_context = lambda policy: False
    eager = [slat(cond) for cond in conds]
    del pipe._cache_context
    pipe.set_memory_policy(cuda_graphs=graphs)
    for cond, want in zip(conds, eager):
        assert torch.equal(slat(cond), want)


def test_8bit_attention_runs_eagerly_and_keeps_no_graph(tiny_pipeline_dir):
    """A graph replays the kernels it captured: under 8-bit attention no graph is kept or replayed, every attention
    call takes the 8-bit path and the log names the twin (the tiny flows' 16-wide heads are below the Triton kernel's
    32: it declines them and the twin answers), and the exact run after it keeps exact graphs again."""
    from trellis.modules.attention import attention_precision, kernel_log

    pipe = pipelines.from_pretrained(tiny_pipeline_dir).to("cuda")
    pipe.set_memory_policy(precision="fp16", offload="none", cuda_graphs="structure")
    cond = pipe.get_cond(_image(8))
    with kernel_log.recording() as log, attention_precision("8bit"):
        fast = structure_latent(pipe, cond, 1)
    assert pipe._kept_graphs == {} and set(log) == {"8bit_twin"} and log["8bit_twin"]["calls"] > 0, log
    exact = structure_latent(pipe, cond, 1)
    assert pipe._kept_graphs and not torch.equal(fast, exact)
