"""meshes.check_mesh, the check every surface runs on a 3-D model before its job is queued (REST, MCP, the app),
against files whose headers look fine but whose geometry the job's loader would fail on (or drop) later: an OBJ
face naming a vertex it lacks, NaN or infinite OBJ coordinates, a PLY shorter than its header's counts. What the
check refuses the loader refuses too, and what it lets through loads."""
import time

import pytest

from desktop.jobs import InputError, check_mesh
from desktop.jobs.steps import load_mesh

TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"
PLY_HEAD = (b"ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
            b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")

BROKEN = [
    ("index.obj", b"v 0 0 0\nf 1 2 3000000000\n", "a face names vertex 2, but the file has 1 vertex"),
    ("far.obj", TRIANGLE + b"f 1 2 3000000000\n", "a face names vertex 3,000,000,000, but the file has 3 vertices"),
    ("behind.obj", TRIANGLE + b"f -1 -2 -4\n", "a face names vertex -4"),
    ("half.obj", TRIANGLE + b"f 1 2 2.5\n", "a face names vertex 2.5, not a whole number"),
    ("nan.obj", b"v nan nan nan\nv inf 0 0\nv 0 1 0\nf 1 2 3\n",
     "2 of its vertices have coordinates that are not numbers (NaN) or are infinite, the first is vertex 1"),
    ("overflow.obj", b"v 0 0 0\nv 1 0 0\nv 0 1e999 0\nf 1 2 3\n", "the first is vertex 3"),
    ("claims.ply", PLY_HEAD % 4_000_000_000 + b"\0" * 64,
     "element vertex 4,000,000,000 and element face 1, at least 48,000,000,013 bytes of data, but 64 bytes follow"),
    ("claims_ascii.ply", (b"ply\nformat ascii 1.0\nelement vertex 4000000000\nproperty float x\nproperty float y\n"
                          b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
                          b"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"), "damaged PLY file"),
]


@pytest.mark.parametrize("name,data,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_geometry_is_refused_by_the_check_as_by_the_loader(name, data, words, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    for source in ((name, data), path):                   # an upload, or a file on this computer
        t = time.perf_counter()
        with pytest.raises(InputError, match="damaged") as err:
            check_mesh(source)
        assert words in str(err.value) and str(err.value).startswith(f"{name} is a damaged "), str(err.value)
        assert time.perf_counter() - t < 1.0
    with pytest.raises(InputError):                       # what the job would have met, later
        load_mesh((name, data), "." + name.rsplit(".", 1)[1])


def test_sound_files_pass_and_load():
    import trimesh

    box = trimesh.creation.box()
    sound = [("slashes.obj", TRIANGLE + b"vt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/1\n"),
             ("relative.obj", TRIANGLE + b"# a comment\nf -3//1 -2//1 -1//1\n"),
             ("windows.obj", (TRIANGLE + b"f 1 2 3\n").replace(b"\n", b"\r\n")),
             ("box.ply", box.export(file_type="ply", encoding="binary")),
             ("box_ascii.ply", box.export(file_type="ply", encoding="ascii")),
             ("box.obj", box.export(file_type="obj").encode())]
    for name, data in sound:
        ext = check_mesh((name, data))
        assert ext == "." + name.rsplit(".", 1)[1], name
        assert len(load_mesh((name, data), ext).faces) > 0, name


def test_a_binary_ply_one_byte_short_is_damaged():
    import trimesh

    data = trimesh.creation.box().export(file_type="ply", encoding="binary")
    with pytest.raises(InputError, match="at least 252 bytes of data, but 251 bytes follow the header"):
        check_mesh(("box.ply", data[:-1]))
