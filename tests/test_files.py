"""Result files: written whole or not at all, readable as a user expects."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from agents.files import atomic_savefig, atomic_write_text, json_clean, pyplot, write_csv


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_gives_the_usual_permissions_and_leaves_no_temporary(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a" / "x.txt", "hello\n")
    write_csv(tmp_path / "r.csv", [{"a": 1, "b": 2.5}, {"a": 3, "b": 4.0}])
    fig = pyplot().figure()
    atomic_savefig(fig, tmp_path / "f.png", dpi=20)
    pyplot().close(fig)
    for name in ("a/x.txt", "r.csv", "f.png"):
        assert _mode(tmp_path / name) == 0o644, name
    assert (tmp_path / "r.csv").read_text() == "a,b\n1,2.5\n3,4.0\n"
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == []


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old\n")

    class Boom:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(TypeError):
        atomic_write_text(path, None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        atomic_savefig(Boom(), tmp_path / "f.png")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_json_clean_is_strict_json():
    assert json_clean({"a": np.float32(1.5), 2: [np.int64(3), float("nan"), np.inf]}) == {
        "a": 1.5, "2": [3, None, None]}
