"""A zero-byte image file (a download or copy that did not finish) is said to be empty, by name, on the paths the
CLI, batch folders and the page read (a file path), as the REST upload already says of empty bytes; a non-empty file
that is no image is still 'not an image file'."""
import pytest

from desktop.jobs.inputs import check_image
from desktop.jobs.job import InputError
from trellis.pipelines.preprocess import load_image


def test_an_empty_file_is_said_to_be_empty(tmp_path):
    path = tmp_path / "chair 🎉.png"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        load_image(str(path))
    assert str(caught.value).startswith(f"{path} is empty (0 bytes)"), caught.value
    with pytest.raises(InputError, match=r"is empty \(0 bytes\)"):
        check_image(str(path))
    path.write_bytes(b"GIF89a but no more")
    with pytest.raises(ValueError, match="not an image file"):
        load_image(path)
