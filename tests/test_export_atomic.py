import pytest

from geoembed.errors import OutputError
from geoembed.export.atomic import TEMP_MARKER, atomic_directory
from geoembed.export.outputs import MARKER_FILE


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target, overwrite=False) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("failed half-way")
    assert (target / "a.txt").read_text() == "first"
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]

    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    # the old content is gone; the directory carries geoembed's ownership marker
    assert sorted(p.name for p in target.iterdir()) == [MARKER_FILE, "b.txt"]


def test_atomic_directory_refuses_existing_target(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    with pytest.raises(OutputError), atomic_directory(target, overwrite=False) as tmp:
        (tmp / "a.txt").write_text("x")
    assert list(target.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]


def test_a_failed_write_on_a_full_disk_is_reported_as_enospc(tmp_path, monkeypatch) -> None:
    import errno
    import shutil
    from collections import namedtuple

    from geoembed.export.atomic import disk_full_as_enospc

    usage = namedtuple("usage", "total used free")
    # a disk with room: the error passes through as it is
    with pytest.raises(RuntimeError, match="TIFFWriteDirectory"):
        with disk_full_as_enospc(tmp_path):
            raise RuntimeError("TIFFWriteDirectory failed")
    # a full disk: GDAL's unrelated message becomes ENOSPC, chained to it
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 100, 0))
    with pytest.raises(OSError) as info:
        with disk_full_as_enospc(tmp_path):
            raise RuntimeError("TIFFWriteDirectory failed")
    assert info.value.errno == errno.ENOSPC
    assert "No space left" in str(info.value) and str(tmp_path) in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
