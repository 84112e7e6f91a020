"""Checkpoint bookkeeping on plain folders: markers, integrity, newest intact, pruning, refusals."""

import json

import pytest

from gptnl.errors import CheckpointError
from gptnl.trainer import checkpoint as ckpt


def fake(run, step, complete=True, integrity="sha256"):
    folder = run / ckpt.tag_for(step)
    folder.mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(b"weights" * step)
    if complete:
        ckpt.write_marker(run, folder.name, {"step": step, "position": step * 8, "world_size": 2, "zero_stage": 2},
                          integrity)
    return folder


def test_newest_complete_skips_incomplete_and_corrupt(tmp_path):
    fake(tmp_path, 4)
    f8 = fake(tmp_path, 8)
    fake(tmp_path, 12, complete=False)
    (f8 / "mp_rank_00_model_states.pt").write_bytes(b"x" * len(b"weights" * 8))  # same size, other bytes
    with pytest.warns(UserWarning) as record:
        info = ckpt.newest_complete(tmp_path)
    assert info.step == 4 and info.meta["position"] == 32
    messages = [str(w.message) for w in record]
    assert any("global_step12 skipped: no completion marker" in m for m in messages)
    assert any("global_step8 skipped" in m and "checksum" in m for m in messages)


def test_size_integrity_catches_truncation(tmp_path):
    f = fake(tmp_path, 4, integrity="size")
    assert ckpt.problem(f) is None
    (f / "mp_rank_00_model_states.pt").write_bytes(b"short")
    assert "expected" in ckpt.problem(f)


def test_missing_file_and_corrupt_marker(tmp_path):
    f = fake(tmp_path, 4)
    (f / "mp_rank_00_model_states.pt").unlink()
    assert "missing" in ckpt.problem(f)
    (f / ckpt.MARKER).write_text("{not json")
    assert "corrupt" in ckpt.problem(f)


def test_prune_keeps_newest_complete_and_anything_newer(tmp_path):
    for s in (4, 8, 12, 16):
        fake(tmp_path, s)
    fake(tmp_path, 20, complete=False)  # possibly still being written: never pruned
    ckpt.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step12", "global_step16", "global_step20"]


def test_latest_pointer_is_written_atomically(tmp_path):
    ckpt.set_latest(tmp_path, "global_step8")
    assert (tmp_path / "latest").read_text() == "global_step8"
    assert not list(tmp_path.glob(".latest*"))  # no temp file left behind


def test_resume_refusals_name_the_fix(tmp_path):
    fake(tmp_path, 4)
    info = ckpt.newest_complete(tmp_path)
    ckpt.check_compatible(info, 2, 2)
    with pytest.raises(CheckpointError, match="ds_to_universal .*--inject_missing_state"):
        ckpt.check_compatible(info, 4, 2)
    with pytest.raises(CheckpointError, match="Set zero_stage: 2"):
        ckpt.check_compatible(info, 2, 3)
    meta = json.loads((tmp_path / "global_step4" / ckpt.MARKER).read_text())
    assert meta["integrity"] == "sha256" and "mp_rank_00_model_states.pt" in meta["files"]
