"""Image files whose metadata Pillow refuses to unpack (a compressed ICC profile or text chunk that would grow past
its safety limit: a hostile file, or an editor's oversized metadata): refused as that file's, named, with what to do,
whether Pillow stops while opening the file (the chunk before the pixels) or while decoding it (the chunk after)."""
import io
import struct
import zlib

import pytest
from PIL import Image

from desktop.jobs.inputs import check_image
from desktop.jobs.job import InputError
from trellis.pipelines import preprocess as pp

BIG = 64 * 2 ** 20            # unpacked bytes, far past Pillow's limit for one chunk; about 64 KB packed


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with(kind: bytes, after_pixels: bool) -> bytes:
    """A real 64x64 RGBA PNG with a chunk of `kind` whose compressed payload unpacks to BIG bytes."""
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (200, 30, 30, 255)).save(out, "PNG")
    png = out.getvalue()
    bomb = chunk(kind, b"name\x00\x00" + zlib.compress(bytes(BIG), 9))
    at = png.rindex(b"IEND") - 4 if after_pixels else 33          # before IEND, or right after IHDR
    return png[:at] + bomb + png[at:]


CASES = [(b"iCCP", False), (b"zTXt", False), (b"zTXt", True)]


@pytest.mark.parametrize("kind,after_pixels", CASES)
def test_a_metadata_bomb_is_refused_naming_the_file(tmp_path, kind, after_pixels):
    path = tmp_path / "photo with metadata.png"
    path.write_bytes(png_with(kind, after_pixels))
    with pytest.raises(ValueError) as caught:
        pp.load_image(str(path))
    message = str(caught.value)
    assert message.startswith(str(path)) and "could not be decoded" in message, message
    assert "metadata" in message and "use another" in message, message
    with pytest.raises(ValueError) as caught:
        pp.load_image(path.read_bytes())
    assert str(caught.value).startswith("the uploaded data could not be decoded"), caught.value
    with pytest.raises(InputError) as caught:            # the app's upload check: the same words
        check_image(str(path))
    assert str(path) in str(caught.value), caught.value


def test_the_same_file_without_the_bomb_loads(tmp_path):
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (200, 30, 30, 255)).save(out, "PNG")
    assert pp.load_image(out.getvalue()).size == (64, 64)
