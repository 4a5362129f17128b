"""The O-Voxel reduction clusters on the GPU and runs its later steps (hole filling, the quadric trim) on CPU copies:
those steps give the same arrays from CUDA tensors as from CPU ones, so the move changed no export; and the
clustering made apart (``cluster_stage``, as the early preparation makes it) gives the one call's reduction."""
import numpy as np
import pytest
import torch

from tests.helpers.ovoxel_blobs import random_blob
from trellis.export.cleanup.chain import clean_mesh_for_export
from trellis.export.pbr.prepare import dense_mesh
from trellis.export.pbr.reduce import cluster_stage, finish_reduction, reduce_to_target
from trellis.export.pbr.small_holes import fill_small_holes


@pytest.mark.parametrize("target", [2400, 3000])
def test_the_steps_after_the_clustering_give_the_same_arrays_on_the_gpu_and_the_cpu(target):
    mesh = random_blob(150, latent=32, device="cuda")
    v, f = dense_mesh(mesh)
    made = cluster_stage(v, f, target, mesh.voxel_size, info={})
    assert made.dense_vertices.is_cuda and not made.vertices.is_cuda
    cpu = fill_small_holes(made.vertices, made.faces, info={})
    gpu = fill_small_holes(made.vertices.cuda(), made.faces.cuda(), info={})
    assert gpu[0].is_cuda
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())
    trim = int(0.97 * cpu[1].shape[0])           # a trim as the reduction makes one, from either device
    on_cpu = clean_mesh_for_export(*cpu, fill_holes=False, target_faces=trim)
    on_gpu = clean_mesh_for_export(*gpu, fill_holes=False, target_faces=trim)
    for a, b in zip(on_cpu, on_gpu):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    one = reduce_to_target(v, f, target, mesh.voxel_size)
    apart = finish_reduction(made, target)
    for a, b in zip(one, apart):
        assert np.array_equal(a, b)
