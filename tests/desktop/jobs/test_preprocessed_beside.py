"""The preprocessed images are written in a thread while the job samples (steps.write_preprocessed): whole and
equal to the images when the body ends, whether it ends well or raises; a failure to write them fails the job after
the body, and leaves no partial file and no thread. Real files in a real job folder."""
import errno
import threading
import uuid

import numpy as np
import pytest
from PIL import Image

from desktop.jobs import steps
from desktop.jobs.folder import JobFolder, is_partial
from desktop.jobs.job import Job
from desktop.settings import GenerationSettings
from trellis.core.callbacks import Cancelled


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (518, 518, 4), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (96, 64, 4), dtype=np.uint8))]


@pytest.fixture
def folder(tmp_path):
    job = Job(id=uuid.uuid4().hex, inputs=[], settings=GenerationSettings())
    f = JobFolder.create(tmp_path, job)
    yield job, f
    f.release()


def writer_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "trellis-preprocessed"]


def check_files(f, imgs):
    """The folder holds each image's PNG, whole and equal to it, and no partial file."""
    for kind, im in zip(("preprocessed", "preprocessed_2"), imgs):
        with Image.open(f.file(kind)) as got:
            assert np.array_equal(np.asarray(got), np.asarray(im))
    assert not [p for p in f.path.iterdir() if is_partial(p.name)]


def check_written(job, f, imgs):
    assert set(job.files) == {"preprocessed", "preprocessed_2"}
    check_files(f, imgs)


def test_written_while_the_body_runs(folder):
    job, f = folder
    imgs = images()
    ran = []
    with steps.write_preprocessed(job, f, imgs):
        ran.append(True)
        imgs[0].load()                          # the body reads the images meanwhile
    assert ran and not writer_threads()
    check_written(job, f, imgs)
    assert job.timings["preprocessed_png"] > 0


def test_a_body_that_raises_leaves_them_whole(folder):
    job, f = folder
    imgs = images()
    with pytest.raises(Cancelled):
        with steps.write_preprocessed(job, f, imgs):
            raise Cancelled()
    assert not writer_threads()
    check_files(f, imgs)


def test_a_full_disk_fails_the_job_after_the_body(folder, monkeypatch):
    job, f = folder
    real_save = Image.Image.save

    def half_then_full(self, fp, *args, **kwargs):
        real_save(self.crop((0, 0, 8, 8)), fp, *args, **kwargs)        # a file begun...
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))  # ...then the disk is full
    monkeypatch.setattr(Image.Image, "save", half_then_full)
    ran = []
    with pytest.raises(OSError) as err:
        with steps.write_preprocessed(job, f, images()):
            ran.append(True)
    assert err.value.errno == errno.ENOSPC and ran and not writer_threads()
    assert not job.files and not [p for p in f.path.iterdir() if is_partial(p.name) or p.suffix == ".png"]


def test_nothing_to_write(folder):
    job, f = folder
    with steps.write_preprocessed(job, f, []):
        pass
    assert job.files == {} and not writer_threads()
