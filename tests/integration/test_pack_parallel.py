"""`gptnl pack` on several workers: datatrove's local executor (a process pool) and Ray write byte for
byte the shards one process writes; `kill -9` mid-pack, then the same command, gives them too; a
broken file stops every worker's run with one line naming it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import SAMPLE

from gptnl.pack import pack

pytestmark = pytest.mark.slow


def shards(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}, manifest["produced"], manifest["consumed"]


def test_two_local_workers_and_ray_write_what_one_process_writes(tmp_path, sample_tokenizer):
    pack(SAMPLE, sample_tokenizer, 64, tmp_path / "one", val_fraction=0.1, shard_tokens=4096)
    one = shards(tmp_path / "one")
    assert len(one[0]) > 8 and len(one[2]["files"]) == 4
    pack(SAMPLE, sample_tokenizer, 64, tmp_path / "two", val_fraction=0.1, shard_tokens=4096, workers=2)
    assert shards(tmp_path / "two") == one
    pack(SAMPLE, sample_tokenizer, 64, tmp_path / "ray", val_fraction=0.1, shard_tokens=4096, workers=2,
         executor="ray")
    assert shards(tmp_path / "ray") == one


def big_corpus(path, files=6, copies=12):
    """Files of about 1.5 MB each (the sample's documents repeated under new ids)."""
    path.mkdir()
    docs = [json.loads(line) for f in sorted(SAMPLE.glob("*.jsonl")) for line in f.read_text().splitlines()]
    for i in range(files):
        with open(path / f"{i:02d}.jsonl", "w") as fh:
            for c in range(copies):
                for d in docs[i::files]:
                    fh.write(json.dumps({"id": f"{d['id']}-{c}", "text": d["text"]}, ensure_ascii=False) + "\n")
    return path


def gptnl_pack(corpus, tokenizer, out, *extra):
    return [sys.executable, "-m", "gptnl", "pack", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
            "--seq-len", "64", "--val-fraction", "0.1", "--shard-tokens", "65536", *extra]


def test_kill_9_mid_pack_then_the_same_command_gives_the_same_shards(tmp_path, sample_tokenizer):
    corpus = big_corpus(tmp_path / "corpus")
    pack(corpus, sample_tokenizer, 64, tmp_path / "whole", val_fraction=0.1, shard_tokens=65536)
    out = tmp_path / "out"
    cmd = gptnl_pack(corpus, sample_tokenizer, out, "--workers", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / ".pack" / "parts"
    deadline = time.monotonic() + 120
    while not list(parts.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the pool's workers too
    proc.wait()
    finished = len(list(parts.glob("*.json")))
    assert 1 <= finished < 6 and not (out / "manifest.json").exists(), finished  # killed mid-pack
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert shards(out) == shards(tmp_path / "whole")
    assert not (out / ".pack").exists()


def test_a_broken_file_stops_every_workers_run_with_one_line(tmp_path, sample_tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in sorted(SAMPLE.glob("*.jsonl")):
        (corpus / f.name).write_bytes(f.read_bytes())
    (corpus / "zz-broken.jsonl").write_text('{"id": "a", "text": "goed"}\n[1, 2]\n')
    res = subprocess.run(gptnl_pack(corpus, sample_tokenizer, tmp_path / "out", "--workers", "2"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2  # the CLI's code for a refused input
    assert "zz-broken.jsonl:2: expected a JSON object, got list" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_slurm_array_tasks_and_the_merge_job_write_what_one_process_writes(tmp_path, sample_tokenizer,
                                                                            slurm_cluster):
    """`gptnl slurm submit pack` on a real local Slurm: two array tasks, then the job that merges."""
    from conftest import wait_slurm_job

    pack(SAMPLE, sample_tokenizer, 64, tmp_path / "one", val_fraction=0.1, shard_tokens=4096)
    out = tmp_path / "slurm"
    res = subprocess.run([sys.executable, "-m", "gptnl", "slurm", "submit", "pack", str(SAMPLE), "--tokenizer",
                          str(sample_tokenizer), "--out", str(out), "--cluster", str(slurm_cluster), "--seq-len", "64",
                          "--val-fraction", "0.1", "--shard-tokens", "4096", "--tasks", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^tasks: job \d+$", res.stderr, re.M), res.stderr
    final = wait_slurm_job(res.stdout.strip(), timeout=300)
    logs = "".join(p.read_text() for p in (out / ".pack").rglob("*.out")) if (out / ".pack").exists() else ""
    assert final["JobState"] == "COMPLETED", (final, logs[-3000:])
    assert shards(out) == shards(tmp_path / "one")
