"""An ``.npz`` written byte for byte as ``zipfile`` writes it (``ZipFile(path, "w")``, each member opened with
``open(name, "w", force_zip64=True)`` and filled by ``np.lib.format.write_array``), in two steps: ``pack`` makes one
member (its ``.npy`` bytes, their CRC-32, deflated at a level or stored), ``write_npz`` writes the packed members in
order. Members can so be packed side by side in threads: zlib leaves the GIL while it deflates and sums, and a
member's deflate stream does not depend on the others'.

The archive is zipfile's: per member a local header with the zip64 extra field of both sizes (force_zip64), then its
data (no data descriptor: the sizes are known before it is written); then the central directory (a zip64 extra only
for a size or offset past ``ZIP64_LIMIT``) and the end record (preceded by zip64's end record and locator when the
directory lies past it or holds too many entries). Every member is dated 1980-01-01 00:00 (zipfile's default for a
member opened by name) with the permissions rw------- zipfile gives it."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["ZIP64_LIMIT", "Packed", "pack", "write_npz"]

ZIP64_LIMIT = (1 << 31) - 1           # zipfile's: a size or offset past it goes to a zip64 field
ZIP64_VERSION = 45                    # what force_zip64 makes every member need
MAX_ENTRIES = (1 << 16) - 1           # past it the entry count goes to zip64's end record
DOS_TIME, DOS_DATE = 0, (1 << 5) | 1  # 1980-01-01 00:00:00
PERMISSIONS = 0o600 << 16             # rw-------
UTF8_NAME = 0x800                     # the flag of a name that is not ASCII


@dataclass
class Packed:
    """One member as the zip holds it: ``chunks`` (its bytes, deflated or the ``.npy`` itself) of ``packed_size``
    bytes, ``crc`` and ``size`` of the ``.npy`` bytes, ``method`` zipfile.ZIP_DEFLATED or ZIP_STORED."""
    name: str
    chunks: list
    crc: int
    size: int
    packed_size: int
    method: int


def npy_parts(a: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(.npy header, the values' bytes as uint8) exactly as ``np.lib.format.write_array`` writes ``a``: Fortran order
    for an array contiguous only that way, C order otherwise."""
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    header = np.lib.format.header_data_from_array_1_0(a)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    # either order: the values' bytes are the array's memory, read as it lies
    flat = (a.T if header["fortran_order"] else a).reshape(-1)
    return buf.getvalue(), flat.view(np.uint8)


def pack(name: str, a: np.ndarray, level: int | None = 1) -> Packed:
    """``a`` as the member ``name`` (e.g. "coords.npy"), deflated at ``level`` (zipfile's raw deflate stream, the
    same bytes whatever the pieces it is fed in) or stored (None: ``a``'s memory is written as it is, not copied)."""
    head, data = npy_parts(a)
    crc = zlib.crc32(data, zlib.crc32(head))
    size = len(head) + data.nbytes
    if level is None:
        return Packed(name, [head, data], crc, size, size, zipfile.ZIP_STORED)
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    chunks = [deflate.compress(head), deflate.compress(data), deflate.flush()]
    return Packed(name, chunks, crc, size, sum(len(c) for c in chunks), zipfile.ZIP_DEFLATED)


def encoded_name(name: str) -> tuple[bytes, int]:
    """(the name's bytes, its flag bits) as zipfile stores a name."""
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), UTF8_NAME


def write_npz(path, members: list, zip64_limit: int = ZIP64_LIMIT) -> None:
    """Write the ``Packed`` members, in order, as one zip archive at ``path`` (``zip64_limit``: zipfile's unless a
    test needs zip64's fields in a small archive)."""
    system = zipfile.ZipInfo().create_system       # zipfile's: 0 on Windows, 3 (Unix) elsewhere
    directory = []
    with open(path, "wb") as f:
        offset = 0
        for m in members:
            name, flags = encoded_name(m.name)
            local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", ZIP64_VERSION, 0, flags, m.method, DOS_TIME,
                                DOS_DATE, m.crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 20) + name \
                + struct.pack("<HHQQ", 1, 16, m.size, m.packed_size)
            f.write(local)
            f.writelines(m.chunks)
            directory.append(central_entry(m, name, flags, offset, system, zip64_limit))
            offset += len(local) + m.packed_size
        f.write(b"".join(directory))
        f.write(end_records(len(members), sum(map(len, directory)), offset, zip64_limit))


def central_entry(m: Packed, name: bytes, flags: int, offset: int, system: int, limit: int = ZIP64_LIMIT) -> bytes:
    """A member's entry in the central directory; sizes and offset past ``limit`` in a zip64 extra field."""
    size, packed_size, at, wide = m.size, m.packed_size, offset, []
    if size > limit or packed_size > limit:
        wide += [size, packed_size]
        size = packed_size = 0xFFFFFFFF
    if offset > limit:
        wide.append(offset)
        at = 0xFFFFFFFF
    extra = struct.pack("<HH" + "Q" * len(wide), 1, 8 * len(wide), *wide) if wide else b""
    return struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", ZIP64_VERSION, system, ZIP64_VERSION, 0, flags, m.method,
                       DOS_TIME, DOS_DATE, m.crc, packed_size, size, len(name), len(extra), 0, 0, 0, PERMISSIONS,
                       at) + name + extra


def end_records(count: int, size: int, start: int, limit: int = ZIP64_LIMIT) -> bytes:
    """The end of the archive for ``count`` entries in a directory of ``size`` bytes at ``start``."""
    out = b""
    if count > MAX_ENTRIES or start > limit or size > limit:
        out = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, ZIP64_VERSION, ZIP64_VERSION, 0, 0, count, count, size,
                          start) + struct.pack("<4sLQL", b"PK\x06\x07", 0, start + size, 1)
        count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
    return out + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, start, 0)
