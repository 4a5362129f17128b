"""Tiny random-weight networks built in the test (no pipeline folder): quick to make, the real modules."""
import torch

import trellis.models as models
from trellis.models.trellis2 import sc_vae

# The sampling steps of a quick pipeline run on the tiny pipeline: `pipe.run(image, **FAST)`.
FAST = dict(sparse_structure_sampler_params={"steps": 3}, slat_sampler_params={"steps": 3})

SC_VAE_TINY = dict(model_channels=[32, 16, 16, 8, 8], latent_channels=4, num_blocks=[1, 1, 1, 1, 0],
                   block_type=["SparseConvNeXtBlock3d"] * 5, block_args=[{}] * 5)


def slat_flow(seed=0, **kw):
    """A two-block SLat flow at resolution 16 (8 channels in and out, seeded weights), in eval mode."""
    args = dict(resolution=16, in_channels=8, out_channels=8, model_channels=64, cond_channels=32, num_blocks=2,
                num_heads=4, mlp_ratio=4, patch_size=2, num_io_res_blocks=2, io_block_channels=[16],
                qk_rms_norm=True)
    args.update(kw)
    torch.manual_seed(seed)
    return models.SLatFlowModel(**args).eval()


def tiny_sc_vae_decoders():
    """TRELLIS.2's shape and texture SC-VAE decoders at resolution 32 with SC_VAE_TINY's widths, seeded."""
    torch.manual_seed(0)
    shape = sc_vae.FlexiDualGridVaeDecoder(resolution=32, up_block_type=["SparseResBlockC2S3d"] * 4, **SC_VAE_TINY)
    tex = sc_vae.SparseUnetVaeDecoder(out_channels=6, up_block_type=["SparseResBlockC2S3d"] * 4, pred_subdiv=False,
                                      **SC_VAE_TINY)
    with torch.no_grad():                                   # about half the children at each level: ~1300 fine voxels
        for level in shape.blocks[:4]:
            level[-1].to_subdiv.bias.zero_()
    return shape.eval(), tex.eval()
