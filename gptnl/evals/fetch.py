"""`gptnl eval fetch NAME… --to DIR`: a public set's files from the Hugging Face Hub with
`huggingface_hub`, as the publisher distributes them, into DIR/<task>/; checked (every split the
task reads is there, every row reads in the publisher's layout), recorded (DIR/<task>/FETCHED.json
with each file's sha256, and the folder in the registry that later runs look in).

Offline (HF_HUB_OFFLINE=1), for sets not on the Hub, or when the Hub cannot be reached, it prints
which files to place where instead. HF_ENDPOINT (a mirror) and a token for gated sets (--token or
HF_TOKEN) are honoured. The network is used only here, and only when the user runs this command."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from gptnl.evals.spec import TaskSpec, load_suite
from gptnl.evals.tasks import SUITES_DIR, TASKS_DIR, EvalError, discover
from gptnl.public_data import DATA_ENV, PublicDataError, match, record

MANIFEST = "FETCHED.json"
DEFAULT_ENDPOINT = "https://huggingface.co"


class FetchedFile(BaseModel):
    path: str
    bytes: int
    sha256: str


class FetchRecord(BaseModel):
    """What `gptnl eval fetch` got: enough to tell later whether the files are still the same."""

    task: str
    source: str  # the Hub repo, or the publisher's address for files placed by hand
    revision: str
    commit: str | None
    endpoint: str
    fetched_at: str
    licence: str
    may_train: bool
    items: int
    files: list[FetchedFile]


def public_specs(names: list[str]) -> list[TaskSpec]:
    """The public tasks named, a suite name standing for its public tasks, in the order given."""
    from gptnl.evals.spec import load_task_spec

    found = discover(TASKS_DIR)
    suites = {p.stem: p for p in SUITES_DIR.glob("*.yaml")}
    out: list[TaskSpec] = []
    for name in names:
        members = load_suite(suites[name]).tasks if name in suites and name not in found else [name]
        for member in members:
            if member not in found:
                raise EvalError(f"{member}: no such task or suite (public tasks: {', '.join(_public(found))})")
            spec = load_task_spec(found[member])
            if spec.public is None:
                if name == member:
                    raise EvalError(f"{member}: not a public set; its items ship with gptnl")
                continue
            if spec.name not in {s.name for s in out}:
                out.append(spec)
    return out


def _public(found: dict[str, Path]) -> list[str]:
    return [n for n, p in found.items() if "\npublic:" in p.read_text(encoding="utf-8")]


def _globs(alt) -> list[str]:
    return [alt] if isinstance(alt, str) else list(alt)


def instructions(spec: TaskSpec, to: Path) -> str:
    """Which files to place where, for a machine without the Hub."""
    pub, folder = spec.public, Path(to) / spec.name
    source = f"https://huggingface.co/datasets/{pub.repo} (revision {pub.revision})" if pub.repo else pub.url
    gated = "; gated: accept its terms on the Hub, then fetch with a token" if pub.gated else ""
    lines = [f"{spec.name} ({spec.licence}{'' if pub.may_train else ', evaluate only'}): from {source}{gated}"]
    for split, alternatives in pub.files.items():
        lines.append(f"  {split}{' (evaluated)' if split == pub.split else ''}: one of")
        for alt in alternatives:
            globs = _globs(alt)
            lines += [f"    {folder / globs[0]}"] if len(globs) == 1 else \
                ["    all of:", *(f"      {folder / g}" for g in globs)]
        if pub.repo:
            include = " ".join(f"--include '{g}'" for g in _globs(alternatives[0]))
            lines.append(f"    e.g. hf download {pub.repo} --repo-type dataset --revision {pub.revision} {include} "
                         f"--local-dir {folder}")
    return "\n".join(lines)


def choose(spec: TaskSpec, repo_files: list[str]) -> list[str]:
    """The repo's files the task reads: per split, the first layout whose globs all match."""
    wanted: list[str] = []
    for split, alternatives in spec.public.files.items():
        for alt in alternatives:
            hits = [[f for f in repo_files if fnmatch.fnmatchcase(f, g)] for g in _globs(alt)]
            if all(hits):
                wanted += [f for h in hits for f in h if f not in wanted]
                break
        else:
            if split == spec.public.split:
                raise EvalError(f"{spec.name}: {spec.public.repo} has none of the layouts the task reads for "
                                f"{split} ({', '.join(' + '.join(_globs(a)) for a in alternatives)}); "
                                "its layout changed: pin `revision` in the task.yaml")
    return wanted


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_listed(spec: TaskSpec, path: Path, sibling) -> None:
    """The file is the one the Hub lists: its LFS sha256 where it has one, else its size."""
    lfs = getattr(sibling, "lfs", None)
    if lfs is not None and getattr(lfs, "sha256", None) and _sha256(path) != lfs.sha256:
        raise EvalError(f"{spec.name}: {path} does not match the sha256 the Hub lists ({lfs.sha256}); fetch it again")
    if sibling.size is not None and path.stat().st_size != sibling.size:
        raise EvalError(f"{spec.name}: {path} has {path.stat().st_size} bytes, the Hub lists {sibling.size}; "
                        "fetch it again")


def _download(spec: TaskSpec, folder: Path, endpoint: str, token: str | None) -> tuple[str | None, list[str]]:
    """(the commit fetched, the files) — errors a user can act on as one EvalError."""
    import huggingface_hub as hf
    from huggingface_hub import errors

    pub = spec.public
    api = hf.HfApi(endpoint=endpoint, token=token)
    try:
        info = api.dataset_info(pub.repo, revision=pub.revision, files_metadata=True)
        listed = {s.rfilename: s for s in info.siblings or []}
        names = choose(spec, list(listed))
        for name in names:
            hf.hf_hub_download(pub.repo, name, repo_type="dataset", revision=info.sha or pub.revision,
                               local_dir=folder, token=token, endpoint=endpoint)
            _check_listed(spec, folder / name, listed[name])
    except errors.GatedRepoError:
        raise EvalError(f"{spec.name}: {pub.repo} is gated: accept its terms at "
                        f"https://huggingface.co/datasets/{pub.repo} and give a token (--token or HF_TOKEN)") from None
    except errors.RepositoryNotFoundError:
        raise EvalError(f"{spec.name}: {endpoint} has no dataset {pub.repo} (or it is private: give a token)") from None
    except errors.RevisionNotFoundError:
        raise EvalError(f"{spec.name}: {pub.repo} has no revision {pub.revision}") from None
    except (errors.HfHubHTTPError, OSError) as exc:
        raise EvalError(f"{spec.name}: cannot fetch from {endpoint} ({type(exc).__name__}: {exc}); "
                        f"offline, place the files by hand (HF_HUB_OFFLINE=1 shows where)") from None
    return info.sha, names


def _verify_and_record(spec: TaskSpec, folder: Path, names: list[str], *, source: str, commit: str | None,
                       endpoint: str) -> FetchRecord:
    """Every row of the evaluated split reads in the publisher's layout; FETCHED.json and the registry."""
    from gptnl.evals.public import read_split
    from gptnl.fileio import atomic_write_text

    try:
        items, files = read_split(spec, folder=folder)
    except PublicDataError as exc:
        raise EvalError(f"{spec.name}: the files do not read as the task expects: {exc}") from None
    names = names or [str(f.relative_to(folder)) for f in files]
    rec = FetchRecord(task=spec.name, source=source, revision=spec.public.revision, commit=commit,
                      endpoint=endpoint, fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
                      licence=spec.licence, may_train=spec.public.may_train, items=len(items),
                      files=[FetchedFile(path=n, bytes=(folder / n).stat().st_size, sha256=_sha256(folder / n))
                             for n in names])
    atomic_write_text(folder / MANIFEST, rec.model_dump_json(indent=2) + "\n")
    record(spec.name, folder)
    return rec


def fetch_one(spec: TaskSpec, to: Path, *, endpoint: str, token: str | None) -> FetchRecord:
    """Download, check and record one public set from the Hub."""
    folder = (Path(to) / spec.name).resolve()
    commit, names = _download(spec, folder, endpoint, token)
    return _verify_and_record(spec, folder, names, source=spec.public.repo, commit=commit, endpoint=endpoint)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(names: list[str], to: Path, *, token: str | None = None, say=print) -> list[FetchRecord]:
    """Fetch every named set the Hub has; a set placed by hand already is checked and recorded too.
    Says what to place where for the rest, and fails at the end when any is missing, so a script notices."""
    specs = public_specs(names)
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    fetched, missing = [], []
    for spec in specs:
        folder = (Path(to) / spec.name).resolve()
        if offline() or spec.public.repo is None:
            if not match(folder, spec.public.files[spec.public.split]):
                missing.append(spec)
                continue
            rec = _verify_and_record(spec, folder, [], source=spec.public.repo or spec.public.url, commit=None,
                                     endpoint="by hand")
        else:
            rec = fetch_one(spec, to, endpoint=endpoint, token=token)
        say(f"{spec.name}: {rec.items} items in {folder} ({len(rec.files)} files, sha256 in {MANIFEST}; from "
            f"{rec.source}{'@' + rec.commit[:12] if rec.commit else ''})")
        fetched.append(rec)
    if missing:
        why = "HF_HUB_OFFLINE is set" if offline() else "not on the Hugging Face Hub"
        say(f"Place these by hand ({why}) and run this again to check and record them "
            f"(or set {DATA_ENV}={Path(to).resolve()}):")
        for spec in missing:
            say(instructions(spec, Path(to).resolve()))
        raise EvalError(f"{len(missing)} set(s) to place by hand: {', '.join(s.name for s in missing)} (see above)")
    return fetched
