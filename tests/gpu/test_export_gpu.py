"""GPU-only: the GLB export's overlap of observation renders with the decimation's child processes."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def sphere_bake_inputs():
    """(faces of the source mesh, its Gaussians, the mesh on the GPU, the bake's arguments): a noisy sphere with an
    inner shell, ~1.4 M faces, large enough to be decimated in pieces."""
    from tests.helpers.asset import make_gaussians
    from tests.helpers.meshes import noisy_sphere_with_inner_shell

    v, f = noisy_sphere_with_inner_shell(8)
    gaussian = make_gaussians(torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(f), n=40000).to("cuda")
    mesh = (torch.as_tensor(v, dtype=torch.float32, device="cuda"), torch.as_tensor(f, device="cuda"))
    kw = dict(simplify=0.95, fill_holes=True, texture_size=512, verbose=False, nviews=16, render_resolution=256,
              uv_method="charts", device="cuda")
    return f, gaussian, mesh, kw


def assert_same_bake(a, b):
    """Two bakes' (vertices, faces, uvs, texture, info, normal map) made on two schedules: the same faces and UVs; the
    schedules fold the views' sums in other groups (batches, one by one), so the float texture differs in its last
    bits and a few texels round to the neighbouring 8-bit level. (One schedule run twice: the same bits, below.)"""
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    diff = np.abs(a[3].astype(np.int16) - b[3].astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_one_bake_made_twice_is_the_same_bits():
    """The bake's sums over views add in a fixed order on the GPU (trellis.core.segment_sum), so the same bake made
    twice gives the same texture bit for bit, without PyTorch's global deterministic mode."""
    from trellis.utils.postprocessing_utils import bake_textured_mesh

    _, gaussian, mesh, kw = sphere_bake_inputs()
    assert not torch.are_deterministic_algorithms_enabled()
    first, second = (bake_textured_mesh(gaussian, mesh, **kw) for _ in range(2))
    for k in (0, 1, 2, 3):
        np.testing.assert_array_equal(first[k], second[k])


def test_views_rendered_while_pieces_decimate_give_the_same_bake():
    # A mesh large enough to be decimated in pieces (child processes): the observation views rendered
    # while they run give the same faces, UVs and texture as rendering them afterwards.
    from trellis.export import cleanup as mc
    from trellis.utils.postprocessing_utils import bake_textured_mesh

    f, gaussian, mesh, kw = sphere_bake_inputs()
    assert mc.decimation_pieces(len(f)) > 1                 # several pieces
    before = bake_textured_mesh(gaussian, mesh, overlap_uv=False, **kw)
    overlapped = bake_textured_mesh(gaussian, mesh, **kw)
    assert before[4]["views_rendered_during_simplify"] == 0 and overlapped[4]["views_rendered_during_simplify"] > 0
    assert_same_bake(before, overlapped)


def test_views_held_on_the_gpu_or_in_host_memory_give_the_same_bake(monkeypatch):
    # Where the observation views wait until the UVs are known (on the GPU when they all fit with
    # DEVICE_VIEW_MARGIN to spare, else copied to host memory) changes no face, UV or texel beyond the
    # sums' grouping's last bits.
    from trellis.export import schedule

    _, gaussian, mesh, kw = sphere_bake_inputs()
    monkeypatch.setattr(schedule, "DEVICE_VIEW_MARGIN", 0)
    on_device = schedule.bake_textured_mesh(gaussian, mesh, **kw)
    monkeypatch.setattr(schedule, "DEVICE_VIEW_MARGIN", 1 << 62)    # never room enough: host memory
    on_host = schedule.bake_textured_mesh(gaussian, mesh, **kw)
    info0, info1 = on_device[4], on_host[4]
    assert info0["observations"]["held_on"] == "device" and info1["observations"]["held_on"] == "host"
    # held on the GPU, views are also prepared for the bake (raster, pixel tests) while the UV unwrap runs
    assert info0["observations"]["prepared_during_uv"] > 0 and info1["observations"]["prepared_during_uv"] == 0
    assert info0["views_rendered_during_simplify"] > 0 and info1["views_rendered_during_simplify"] > 0
    assert_same_bake(on_device, on_host)


@pytest.mark.parametrize("budget", [60_000, None])
def test_prepared_views_folded_in_batches_give_the_same_bake(monkeypatch, budget):
    # The views prepared while the UV unwrap runs are folded in batches on a GPU (least_squares.fold_views): the
    # same faces, UVs and texture as folding them one by one, beyond the sums' grouping's last bits; with several
    # batches (a small pixel budget) and with one (the default budget holds these small views).
    from trellis.export import schedule
    from trellis.export.bake import least_squares
    from trellis.tuning import tuned

    _, gaussian, mesh, kw = sphere_bake_inputs()
    monkeypatch.setattr(schedule, "DEVICE_VIEW_MARGIN", 0)
    if budget is not None:
        monkeypatch.setattr(least_squares, "FOLD_BATCH_PIXELS", budget)
    batches = []
    real = least_squares.TextureAccumulator._fold_batch
    monkeypatch.setattr(least_squares.TextureAccumulator, "_fold_batch",
                        lambda self, group: (batches.append(len(group)), real(self, group))[1])
    in_batches = schedule.bake_textured_mesh(gaussian, mesh, **kw)
    with tuned(fold_in_batches=False):
        one_by_one = schedule.bake_textured_mesh(gaussian, mesh, **kw)
    prepared = in_batches[4]["observations"]["prepared_during_uv"]
    assert prepared > 1 and one_by_one[4]["observations"]["prepared_during_uv"] == prepared
    assert sum(batches) <= prepared and (len(batches) > 1 if budget else len(batches) == 1), batches
    assert_same_bake(in_batches, one_by_one)


def test_merge_on_the_gpu_equals_numpy_and_simplify_takes_cuda_tensors():
    # The decimation's merge of duplicate vertices runs on the GPU for CUDA tensors (to_glb's case): the same
    # arrays as numpy's, and so the same decimation, in one pass and in pieces.
    from tests.helpers.meshes import duplicated_soup, noisy_sphere_with_inner_shell
    from trellis.export.cleanup import decimate, pieces, weld

    for v, f in (duplicated_soup(), duplicated_soup(1)):
        ref = weld.merge_duplicate_vertices(v.astype(np.float64), f)
        got = weld.merge_duplicate_vertices_on_device(torch.from_numpy(v).cuda(), torch.from_numpy(f).cuda())
        np.testing.assert_array_equal(got[0], ref[0])
        # the re-join's tidy on the GPU, with and without fins (faces on one vertex set): numpy's arrays
        on_gpu = weld.merge_duplicate_vertices_on_device(torch.from_numpy(v).cuda(), torch.from_numpy(f).cuda(),
                                                         host=False)
        for fins in (False, True):
            gf = torch.cat([on_gpu[1], on_gpu[1][:6].flip(1)]) if fins else on_gpu[1]
            want = weld.tidy_decimated(ref[0], gf.cpu().numpy())
            tidy = weld.tidy_decimated_on_device(on_gpu[0], gf)
            np.testing.assert_array_equal(tidy[0], want[0])
            np.testing.assert_array_equal(tidy[1], want[1])
        np.testing.assert_array_equal(got[1], ref[1])
    v, f = noisy_sphere_with_inner_shell(8)
    v = v.astype(np.float32)
    soup_v = v[f[:200000]].reshape(-1, 3)          # a soup part: duplicates to merge
    soup_f = np.arange(len(soup_v)).reshape(-1, 3) + len(v)
    v, f = np.concatenate([v, soup_v]), np.concatenate([f, soup_f])
    ref = weld.merge_duplicate_vertices(v.astype(np.float64), f)
    got = weld.merge_duplicate_vertices_on_device(torch.from_numpy(v).cuda(), torch.from_numpy(f).cuda())
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert pieces.decimation_pieces(len(f)) > 1
    a = decimate.simplify_mesh(v, f, 0.95)
    b = decimate.simplify_mesh(torch.from_numpy(v).cuda(), torch.from_numpy(f).cuda(), 0.95)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # the cut into pieces on the GPU: the same groups and piece arrays as numpy's
    from trellis.export.cleanup import cut
    mv, mf = weld.merge_duplicate_vertices(v.astype(np.float64), f)
    dv, df = torch.from_numpy(mv).cuda(), torch.from_numpy(mf).cuda()
    groups = cut.split_compact(mv[mf[:, 0]], 8)
    on_gpu = cut.split_compact(dv[df[:, 0]], 8)
    assert all(np.array_equal(a, b.cpu().numpy()) for a, b in zip(groups, on_gpu))
    for (av, af), (bv, bf) in zip(cut.piece_arrays(mv, mf, groups), cut.piece_arrays(dv, df, on_gpu)):
        np.testing.assert_array_equal(av, bv)
        np.testing.assert_array_equal(af, bf)
    # the app's early decimation (ExportJob) is given the decoder's CUDA tensors: merged there, the same result
    c = decimate.BackgroundSimplify(torch.from_numpy(v).cuda(), torch.from_numpy(f).cuda(), 0.95).result()
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])


def test_the_chart_layout_in_its_child_gives_the_same_bake():
    # On a GPU our chart layout runs in a child process beside the views' renders (uv.in_child): the same faces,
    # UVs and texture as the layout in a thread of this process (overlap_uv=False keeps it here).
    from tests.helpers.asset import make_gaussians
    from tests.helpers.meshes import bumpy_sphere
    from trellis.utils.postprocessing_utils import bake_textured_mesh

    v, f = bumpy_sphere(5)
    gaussian = make_gaussians(torch.as_tensor(v), torch.as_tensor(f), n=20000).to("cuda")
    mesh = (torch.as_tensor(v, device="cuda"), torch.as_tensor(f, device="cuda"))
    kw = dict(simplify=0.5, fill_holes=False, texture_size=512, verbose=False, nviews=16, render_resolution=256,
              uv_method="geometric", device="cuda")
    v0, f0, uv0, tex0, info0, _ = bake_textured_mesh(gaussian, mesh, overlap_uv=False, **kw)
    v1, f1, uv1, tex1, info1, _ = bake_textured_mesh(gaussian, mesh, **kw)
    assert info0["uv_in_child"] is False and info1["uv_in_child"] is True
    np.testing.assert_array_equal(f0, f1)
    np.testing.assert_array_equal(uv0, uv1)
    # the views are prepared ahead in one run and not the other: the sums are grouped differently, and
    # on this atlas, which fills more of its texture, 0.3 % of the texels round to the next 8-bit level
    diff = np.abs(tex0.astype(np.int16) - tex1.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-2, (diff.max(), (diff > 0).mean())


def test_side_work_on_the_gpu_runs_on_its_own_stream_beside_the_export():
    # The app's preview beside the bake is the export's side work on the GPU (trellis.export.job.SideWork, on_gpu):
    # it runs on a CUDA stream of its own, after what was queued before it (the Gaussians), and gives what it gives on
    # the default stream.
    from tests.helpers.asset import make_gaussians
    from tests.helpers.meshes import bumpy_sphere
    from trellis.export import ExportJob, SideWork

    v, f = bumpy_sphere(3)
    gaussian = make_gaussians(torch.as_tensor(v), torch.as_tensor(f), n=5000).to("cuda")
    mesh = (torch.as_tensor(v, device="cuda"), torch.as_tensor(f, device="cuda"))

    def probe(stopped):
        stream = torch.cuda.current_stream()
        return stream != torch.cuda.default_stream(), (gaussian.get_xyz * 2).sum().item(), stopped()
    with ExportJob(gaussian, mesh, simplify=0.5, fill_holes=False, texture_size=128, nviews=4, render_resolution=128,
                   beside=[SideWork("probe", probe, on_gpu=True, with_bake=True)]) as export:
        textured = export.bake()
        own, total, stopped = export.side_result("probe")
    assert own and not stopped and len(textured.faces) > 0
    assert total == (gaussian.get_xyz * 2).sum().item()


def test_a_pbr_export_on_the_gpu_is_the_same_bytes_every_time(tmp_path):
    """The O-Voxel export's sums (cluster quadrics, dense normals, the bake) add in a fixed order on the GPU: the same
    O-Voxel exported twice gives the same GLB, without PyTorch's global deterministic mode."""
    from tests.helpers.ovoxel_blobs import random_blob
    from trellis.export.pbr.export import ovoxel_to_glb

    assert not torch.are_deterministic_algorithms_enabled()
    blob = random_blob(400, latent=32, seed=3, device="cuda")
    paths = [tmp_path / f"{i}.glb" for i in range(2)]
    for path in paths:
        ovoxel_to_glb(blob, path, target_faces=20000, texture_size=512, normal_map=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
