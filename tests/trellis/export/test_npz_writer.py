"""The .npz of ``npz_writer``: byte for byte the archive zipfile writes member by member (force_zip64, level 1 or
stored), read back by zipfile and np.load; sizes and offsets past the zip64 limit in zip64's fields, still read."""
import zipfile

import numpy as np

from trellis.export.npz_writer import pack, write_npz
from trellis.export.result_file import directory_size


def arrays() -> dict:
    """{name: (array, deflated)}: the kinds of members a kept result holds, an empty one, one past zipfile's 16 MiB
    write pieces and a name that is not ASCII."""
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 900, (5000, 3)).astype(np.uint16)
    return {"header.npy": (np.frombuffer(b'{"format": "x"}', np.uint8), True),
            "coords.npy": (np.asfortranarray(coords), True),                     # Fortran order
            "rows.npy": (rng.integers(-40000, 40000, (3000, 4)).astype(np.int32), True),
            "none.npy": (np.zeros((0, 3), np.int16), True),
            "planes.npy": (np.tile(np.arange(251, dtype=np.uint8), (17 << 20) // 251), True),
            "floats.npy": (rng.random(6000, dtype=np.float32), False),
            "halves.npy": (rng.random((700, 6)).astype(np.float16), False),
            "größe.npy": (np.arange(10, dtype=np.int64), True)}


def zipfile_npz(path, members: dict) -> None:
    """The reference: each array written by zipfile and np.lib.format, as the result files were."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, (a, deflated) in members.items():
            member = name
            if not deflated:
                member = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_STORED
            with z.open(member, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, a, allow_pickle=False)


def read_back(path) -> dict:
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None                                  # every member's CRC
    with np.load(path) as npz:
        return {name: npz[name] for name in npz.files}


def test_the_archive_is_the_one_zipfile_writes(tmp_path):
    members = arrays()
    zipfile_npz(tmp_path / "zipfile.npz", members)
    write_npz(tmp_path / "ours.npz", [pack(name, a, 1 if deflated else None) for name, (a, deflated) in
                                      members.items()])
    assert (tmp_path / "ours.npz").read_bytes() == (tmp_path / "zipfile.npz").read_bytes()
    back = read_back(tmp_path / "ours.npz")
    for name, (a, _) in members.items():
        got = back[name[:-4]]
        assert got.dtype == a.dtype and np.array_equal(got, a), name
    assert back["coords"].flags.f_contiguous


def test_sizes_and_offsets_past_the_zip64_limit_go_to_zip64_fields(tmp_path):
    members = arrays()
    path = tmp_path / "wide.npz"
    write_npz(path, [pack(name, a, 1 if deflated else None) for name, (a, deflated) in members.items()],
              zip64_limit=0)
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data                    # zip64's end record and locator
    back = read_back(path)
    for name, (a, _) in members.items():
        assert np.array_equal(back[name[:-4]], a), name
    with open(path, "rb") as f:
        entries, size = directory_size(f, len(data))
    with zipfile.ZipFile(path) as z:
        # the directory starts past the last member: its local header (30 bytes, the name, a 20-byte zip64 extra)
        last = z.infolist()[-1]
        start = last.header_offset + 30 + len(last.filename.encode()) + 20 + last.compress_size
    assert entries == len(members) and size == len(data) - start - 56 - 20 - 22
