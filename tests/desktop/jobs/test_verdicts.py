"""verdicts.FileVerdicts, the memory behind check_mesh's second call on one file: a result or a refusal is kept for
the file as it stands and the same limits, the last few files only, not when the file changed while it was read,
and never an error that is not a verdict; threads share it."""
import threading

import pytest

from desktop.jobs.verdicts import FileVerdicts


class Refused(ValueError):
    pass


def counting(verdict):
    """check(path) that counts its calls in .calls and returns verdict(path)'s value (or raises it)."""
    def check(path):
        check.calls += 1
        return verdict(path)
    check.calls = 0
    return check


def test_kept_per_file_and_limits_and_bounded(tmp_path):
    files = [tmp_path / f"{i}.bin" for i in range(4)]
    for i, f in enumerate(files):
        f.write_bytes(bytes(i + 1))
    check = counting(lambda p: p.stat().st_size)
    verdicts = FileVerdicts(size=3)
    assert [verdicts.check(f, check) for f in files[:3]] == [1, 2, 3] and check.calls == 3
    assert [verdicts.check(f, check) for f in files[:3]] == [1, 2, 3] and check.calls == 3
    assert verdicts.check(files[0], check, limits=("other limit",)) == 1 and check.calls == 4
    assert verdicts.check(files[3], check) == 4 and check.calls == 5          # past 3: the oldest go
    assert verdicts.check(files[2], check) == 3 and check.calls == 5
    assert verdicts.check(files[1], check) == 2 and check.calls == 6
    verdicts.forget()
    assert verdicts.check(files[1], check) == 2 and check.calls == 7


def test_a_refusal_is_replayed_with_its_words_and_other_errors_are_not_kept(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")

    def refuse(p):
        raise Refused(f"{p.name} is refused")
    check = counting(refuse)
    verdicts = FileVerdicts(remembered=(Refused,))
    for calls in (1, 1):
        with pytest.raises(Refused, match="model.bin is refused"):
            verdicts.check(path, check)
        assert check.calls == calls

    def fail(p):
        raise OSError("the disk went away")
    check, verdicts = counting(fail), FileVerdicts(remembered=(Refused,))     # one memory a check
    for calls in (1, 2):
        with pytest.raises(OSError):
            verdicts.check(path, check)
        assert check.calls == calls


def test_a_file_changed_while_read_or_not_a_file_is_not_kept(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")

    def grows(p):
        p.write_bytes(p.read_bytes() + b"x")                    # another writer, mid-check
        return "ok"
    check = counting(grows)
    verdicts = FileVerdicts()
    verdicts.check(path, check)
    verdicts.check(path, check)
    assert check.calls == 2
    for missing in (tmp_path / "gone.bin", tmp_path):           # no file, a folder: the check says what is wrong
        check = counting(lambda p: "judged")
        assert [verdicts.check(missing, check) for _ in range(2)] == ["judged"] * 2 and check.calls == 2


def test_threads_share_one_memory(tmp_path):
    files = [tmp_path / f"{i}.bin" for i in range(12)]
    for i, f in enumerate(files):
        f.write_bytes(bytes(i))
    verdicts = FileVerdicts(size=4)
    wrong = []

    def worker(seed):
        for n in range(200):
            f = files[(seed * 7 + n) % len(files)]
            if verdicts.check(f, lambda p: p.stat().st_size) != int(f.stem):
                wrong.append(f)
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong and len(verdicts) <= 4
