"""Which files a build reads: each source's glob, expanded so that every real file counts once.

Python's `glob` follows symbolic links under `**` without noticing a loop, so a folder that links
to itself yields one file tens of times (and two such links, exponentially many). Here `**`
follows a linked folder only when it does not lead back to a folder already on the way down, and
a file reached by several paths is read once, under its shortest path. Everything a glob matches
that is not read (a folder, a broken link, a FIFO, an unreadable file, the wrong suffix, a second
path to a file already read) is returned as a `Skipped` with the reason, for the manifest and the
console. Hidden names match only a pattern that starts with a dot, as in `glob`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from glob import has_magic
from pathlib import Path

from gptnl.config import SourceConfig

SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz"), "parquet": (".parquet",), "txt": (".txt",),
            "warc": (".warc", ".warc.gz", ".wet", ".wet.gz")}


@dataclass(frozen=True)
class Skipped:
    source: str
    path: str
    reason: str


def _entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []  # an unreadable folder below a glob; the folder itself is reported when matched


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def _expand(folder: str, parts: list[str], ancestors: frozenset[str]):
    """Paths under `folder` matching the pattern components `parts` (a small `glob` without loops)."""
    if not parts:
        yield folder
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        entries = [e for e in _entries(folder) if not e.name.startswith(".")]
        if rest:
            yield from _expand(folder, rest, ancestors)
        else:  # a trailing `**` matches everything below; folders only hold what it matches
            yield from (e.path for e in entries if not _is_dir(e))
        for entry in entries:
            real = os.path.realpath(entry.path)
            if _is_dir(entry) and real not in ancestors:
                yield from _expand(entry.path, parts, ancestors | {real})
        return
    if not has_magic(head):
        path = os.path.join(folder, head)
        if rest and os.path.isdir(path):
            yield from _expand(path, rest, ancestors | {os.path.realpath(path)})
        elif not rest and os.path.lexists(path):
            yield path
        return
    for entry in _entries(folder):
        if fnmatchcase(entry.name, head) and (head.startswith(".") or not entry.name.startswith(".")):
            if not rest:
                yield entry.path
            elif _is_dir(entry):
                yield from _expand(entry.path, rest, ancestors | {os.path.realpath(entry.path)})


def _why_not_readable(path: str) -> str | None:
    """None for a regular file that opens for reading; else what it is."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "vanished while listing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
        return f"{kind}, not a regular file"
    try:
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _printable(path: str) -> str:
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _matches(src: SourceConfig, base: Path) -> list[str]:
    anchor, *parts = Path(os.path.abspath(os.path.join(base, src.path))).parts
    return sorted(set(_expand(anchor, parts, frozenset({os.path.realpath(anchor)}))))


def _refusal(src: SourceConfig, path: str) -> str | None:
    why = _why_not_readable(path)
    if why is None and not os.path.basename(path).endswith(SUFFIXES[src.format]):
        why = f"not a {src.format} file ({', '.join(SUFFIXES[src.format])})"
    if why is None:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            why = "its name is not valid UTF-8"
    return why


def discover(sources: list[SourceConfig], base: Path) -> tuple[list[tuple[SourceConfig, Path]], list[Skipped]]:
    """(source, file) pairs in a fixed order, and the matched paths that are not read, with why.

    A source's `path` is a glob, relative to `base` or absolute; `**` recurses. A real file is read
    once in a build, under its own path (else its shortest), by the first source whose glob reaches it."""
    files: list[tuple[SourceConfig, Path]] = []
    skipped: list[Skipped] = []
    taken: dict[str, str] = {}  # real path -> the path it is read under
    for src in sources:
        paths_of: dict[str, list[str]] = {}
        for path in _matches(src, base):
            why = _refusal(src, path)
            if why:
                skipped.append(Skipped(src.name, _printable(path), why))
            else:
                paths_of.setdefault(os.path.realpath(path), []).append(path)
        chosen = []
        for real, paths in paths_of.items():
            paths.sort(key=lambda p: (p != real, p.count(os.sep), p))  # no link on the way, else shortest
            if real in taken:  # an earlier source reads it
                skipped += [Skipped(src.name, p, f"the same file as {taken[real]}") for p in paths]
                continue
            taken[real] = paths[0]
            chosen.append(paths[0])
            skipped += [Skipped(src.name, p, f"the same file as {paths[0]}") for p in paths[1:]]
        files += [(src, Path(p)) for p in sorted(chosen)]
    return files, skipped
