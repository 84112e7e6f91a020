"""`gptnl pack`: tokenise a corpus dir into fixed-length training sequences in token shards.

Two halves. The tasks (`gptnl.pack.tasks`) tokenise each corpus file into a part, on one process,
datatrove's local executor (`--workers N`), Ray, or a Slurm array job; then the merge joins the
parts' token streams in file order (documents joined with EOS, each opened with the tokenizer's
BOS when it adds one) and cuts them into sequences, so the shards are byte for byte what one
process writes, whatever the number of tasks. The work files live in `out/.pack/` until the
manifest is written: a run killed at any point resumes with the same command, redoing only the
files whose part was not finished. Memory holds one batch of documents and one shard.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gptnl import corpus as corpus_mod
from gptnl import tokenizer as tokenizer_mod
from gptnl.artefacts import (
    FileDigest,
    ShardsInputs,
    ShardsManifest,
    ShardsOutputs,
    TokenizerRef,
    read_manifest,
    write_manifest,
)
from gptnl.config.pack import PACK, PackSettings
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_json
from gptnl.pack.shards import SPLITS, ShardWriter, token_dtype
from gptnl.pack.tasks import PackFiles, done_part, part_record, part_stream

WORK = ".pack"
EXECUTORS = ("local", "ray")  # and Slurm: `gptnl slurm submit pack` (gptnl.pack.slurm)
READ_CHUNK = 1 << 24  # tokens read from a part at a time in the merge
# Local workers are forked, not started by a fork server: 0.09 s instead of 0.6 s to start 2 here,
# 8 % of a 7 s pack. Safe for this step: a task touches no lock this process's other threads (the
# progress bar's refresh, the part poller) can hold. It is sent pickled, without the bar; it writes
# its files and its log to the real stderr (`gptnl pack`'s bar does not redirect the standard
# streams), and the bar's thread writes only to stdout.
START_METHOD = "fork"


def prepare(corpus: Path, tokenizer_dir: Path, seq_len: int, out: Path, val_fraction: float, shard_tokens: int):
    """Check the settings and open the work folder; returns (tokenizer, files, parts dir). Work
    files of other settings (another tokenizer, split or file list) are removed: their parts would
    not be these settings' tokens."""
    if seq_len < 2:
        raise GptnlError(f"--seq-len must be at least 2, got {seq_len}")
    if not 0 <= val_fraction < 1:
        raise GptnlError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1:
        raise GptnlError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    tok = tokenizer_mod.load(tokenizer_dir)
    files = [f.resolve() for f in corpus_mod.corpus_files(corpus)]
    work = Path(out) / WORK
    settings = {"tokenizer": tok.checksum, "val_fraction": val_fraction, "bos_ids": tok.bos_ids, "eos_id": tok.eos_id,
                "files": [str(f) for f in files]}
    record = work / "settings.json"
    if record.is_file() and json.loads(record.read_text()) != settings:
        shutil.rmtree(work)
    (work / "parts").mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        atomic_write_json(record, settings)
    for stale in (work / "parts").glob("*.error"):  # a rerun tries a file that failed again
        stale.unlink()
    return tok, files, work / "parts"


def pack(
    corpus: Path,
    tokenizer_dir: Path,
    seq_len: int,
    out: Path,
    *,
    val_fraction: float = PACK.val_fraction,
    shard_tokens: int = PACK.shard_tokens,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
) -> ShardsManifest:
    """Pack `corpus` into `out`; returns the manifest. `progress` is called with bytes read."""
    if executor not in EXECUTORS:
        raise GptnlError(f"--executor {executor!r}: allowed values are {', '.join(EXECUTORS)} "
                         "(on Slurm: `gptnl slurm submit pack`)")
    if workers < 1:
        raise GptnlError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    tok, files, parts = prepare(corpus, tokenizer_dir, seq_len, out, val_fraction, shard_tokens)
    tasks = min(len(files), workers)
    if executor == "local" and tasks == 1:
        PackFiles(files, tokenizer_dir, parts, val_fraction, progress).run()  # in this process, with its bar
    else:
        from gptnl.data_pipeline.build import make_executor, ray_session

        step = PackFiles(files, tokenizer_dir, parts, val_fraction)
        with ray_session(executor, ray_address, workers), _poll_parts(parts, files, progress):
            make_executor(executor, [step], tasks, workers, out / WORK / f"logs-{executor}-{tasks}",
                          start_method=START_METHOD).run()
    return merge(corpus, tokenizer_dir, seq_len, out, val_fraction=val_fraction, shard_tokens=shard_tokens, tok=tok,
                 files=files)


class _poll_parts:
    """Advance `progress` by each file's size as its part completes (tasks in other processes)."""

    def __init__(self, parts: Path, files: list[Path], progress: Callable[[int], None] | None):
        self.parts, self.files, self.progress = parts, files, progress
        self.stop = threading.Event()
        self.seen: set[int] = set()

    def _tick(self) -> None:
        for i, f in enumerate(self.files):
            if i not in self.seen and part_record(self.parts, i).is_file():
                self.seen.add(i)
                self.progress(f.stat().st_size)

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self._tick()

    def __enter__(self):
        if self.progress:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.stop.set()
            self.thread.join()
            self._tick()


def merge(corpus: Path, tokenizer_dir: Path, seq_len: int, out: Path, *, val_fraction: float, shard_tokens: int,
          tok=None, files: list[Path] | None = None) -> dict:
    """Cut the parts' streams, in file order, into the shards and write the manifest (last); then
    remove the work folder. Refuses, naming the file, when a part failed or is missing."""
    out = Path(out)
    parts = out / WORK / "parts"
    if tok is None or files is None:
        tok, files, parts = prepare(corpus, tokenizer_dir, seq_len, out, val_fraction, shard_tokens)
    for error in sorted(parts.glob("*.error")):
        raise GptnlError(error.read_text())
    records = [done_part(parts, i, f) for i, f in enumerate(files)]
    missing = [str(f) for f, r in zip(files, records, strict=True) if r is None]
    if missing:
        raise GptnlError(f"{len(missing)} of {len(files)} corpus files have no finished part (first: {missing[0]}): "
                         "a task did not finish; run the same command again to resume")
    for stale in out.glob("*.bin"):
        stale.unlink()
    (out / "manifest.json").unlink(missing_ok=True)
    dtype = token_dtype(tok.vocab_size)
    seqs_per_shard = max(1, shard_tokens // seq_len)
    splits = {}
    for split in SPLITS:
        writer = ShardWriter(out, split, seq_len, seqs_per_shard, dtype)
        for i, record in enumerate(records):
            _feed(writer, part_stream(parts, i, split), dtype, record["splits"][split]["documents"])
        splits[split] = writer.finish()
    if not splits["train"]["sequences"]:
        raise GptnlError(f"{corpus}: only {splits['train']['tokens']} training tokens, fewer than one sequence of "
                         f"{seq_len}")
    manifest = write_manifest(out, ShardsManifest(
        consumed=ShardsInputs(corpus=str(Path(corpus).resolve()),
                              files=[FileDigest(path=r["path"], sha256=r["sha256"]) for r in records],
                              tokenizer=TokenizerRef(path=str(Path(tokenizer_dir).resolve()), checksum=tok.checksum)),
        produced=ShardsOutputs(dtype=dtype.name, seq_len=seq_len, vocab_size=tok.vocab_size, eos_id=tok.eos_id,
                               bos_ids=tok.bos_ids, splits=splits),
        config=PackSettings(seq_len=seq_len, val_fraction=val_fraction, shard_tokens=shard_tokens)))
    shutil.rmtree(out / WORK)
    return manifest


def _feed(writer: ShardWriter, stream: Path, dtype: np.dtype, documents: int) -> None:
    """One part's stream into the writer, a chunk at a time (a part can be larger than memory)."""
    n = stream.stat().st_size // dtype.itemsize
    writer.documents += documents
    if not n:
        return
    tokens = np.memmap(stream, dtype=dtype, mode="r", shape=(n,))
    for start in range(0, n, READ_CHUNK):
        writer.add(tokens[start:start + READ_CHUNK], documents=0)


def repack(shards: Path) -> ShardsManifest:
    """Pack `shards` again from the corpus and tokenizer its manifest names, with the same settings
    (after a takedown removed documents from that corpus)."""
    m = read_manifest(shards, ShardsManifest)
    c = m.config
    return pack(Path(m.consumed.corpus), Path(m.consumed.tokenizer.path), c.seq_len, shards,
                val_fraction=c.val_fraction, shard_tokens=c.shard_tokens)
