"""Extend a base model's BPE tokenizer with Dutch tokens, and give the new tokens embeddings.

Continued pre-training from an open base (Salamandra, EuroLLM, Llama) keeps the base's vocabulary,
whose Dutch words often split into three or four pieces. `extend` goes on with BPE training where
the base stopped: the corpus is split into words as the base splits it, each word is tokenized by the
base, and the most frequent adjacent pair is merged, N times. Each merge is appended after the base's
own merges and each new token takes the next free id, so every base token keeps its id and every text
the base tokenized the same way still starts from the same pieces; only Dutch words get shorter.

The new embedding rows (input, and output when untied) start as the mean of the base rows of the
pieces the base splits the token into, so the extended model's first forward pass reads a new token
much as the base read its pieces. `extension.json` in the folder records those pieces and the base
tokenizer's checksum; the trainer reads it to allow shards of the extended tokenizer on the base.
"""

from __future__ import annotations

import heapq
import json
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from tokenizers import Tokenizer

from gptnl.artefacts import TokenizerInputs, TokenizerManifest, TokenizerOutputs, write_manifest
from gptnl.config.pack import TOKENIZER
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_text
from gptnl.tokenizer import checksum

EXTENSION = "extension.json"
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")  # SentencePiece byte fallback: its text is not the token's


class AddedToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str
    id: int
    parts: list[int]  # the base tokenizer's ids for the token's text: its embedding starts as their mean


class VocabExtension(BaseModel):
    """What `extension.json` holds: the base it extends and every token it adds."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    base: str
    base_checksum: str  # sha256 of the base's tokenizer.json
    checksum: str  # sha256 of the extended tokenizer.json
    base_vocab_size: int  # the first new id: every id below it is the base's
    vocab_size: int  # base_vocab_size + len(added)
    added: list[AddedToken]


def _words(tok: Tokenizer, texts: Iterable[str]) -> Counter[str]:
    """The corpus as the base's words (normalised and pre-tokenized as it does), counted."""
    counts: Counter[str] = Counter()
    for text in texts:
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        if tok.pre_tokenizer is not None:
            counts.update(piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text))
        else:  # converted SentencePiece (Llama 2, Mistral): words begin at the metaspace
            counts.update(w for w in re.split(r"(?=▁)", text) if w)
    return counts


class _PairCounts:
    """Pair frequencies over tokenized words, with the words each pair occurs in; the most frequent
    pair comes from a heap whose stale entries are skipped (ties: the smaller pair, for a stable order)."""

    def __init__(self, words: list[list[str]], freqs: list[int]):
        self.words, self.freqs = words, freqs
        self.count: Counter[tuple[str, str]] = Counter()
        self.where: dict[tuple[str, str], set[int]] = defaultdict(set)
        for i, w in enumerate(words):
            self._add(i, w, 1)
        self.heap = [(-c, p) for p, c in self.count.items()]
        heapq.heapify(self.heap)

    def _add(self, i: int, w: list[str], sign: int) -> set[tuple[str, str]]:
        changed = set()
        for pair in zip(w, w[1:], strict=False):
            self.count[pair] += sign * self.freqs[i]
            if sign > 0:
                self.where[pair].add(i)
            changed.add(pair)
        return changed

    def best(self) -> tuple[tuple[str, str], int] | None:
        while self.heap:
            c, pair = heapq.heappop(self.heap)
            if self.count.get(pair, 0) == -c and c < 0:
                return pair, -c
        return None

    def merge(self, pair: tuple[str, str]) -> None:
        a, b = pair
        changed: set[tuple[str, str]] = set()
        for i in sorted(self.where.pop(pair, ())):
            w = self.words[i]
            changed |= self._add(i, w, -1)
            merged, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    merged.append(a + b)
                    j += 2
                else:
                    merged.append(w[j])
                    j += 1
            self.words[i] = merged
            changed |= self._add(i, merged, 1)
        self.count.pop(pair, None)
        for p in changed:
            if self.count.get(p, 0) > 0:
                heapq.heappush(self.heap, (-self.count[p], p))


def learn_merges(tok: Tokenizer, texts: Iterable[str], add: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Up to `add` merges that each make a token the base lacks, most frequent first."""
    vocab = tok.get_vocab(with_added_tokens=True)
    byte_fallback = bool(getattr(tok.model, "byte_fallback", False))
    counted = _words(tok, texts)
    words = [[t.value for t in tok.model.tokenize(w)] for w in counted]
    pairs = _PairCounts(words, list(counted.values()))
    merges: list[tuple[str, str]] = []
    while len(merges) < add and (found := pairs.best()) is not None:
        (a, b), count = found
        if count < min_frequency:
            break
        blocked = a + b in vocab or (byte_fallback and (_BYTE_TOKEN.match(a) or _BYTE_TOKEN.match(b)))
        if blocked or " " in a or " " in b:
            pairs.count.pop((a, b), None)  # never a new token: drop the pair, do not merge it
            continue
        merges.append((a, b))
        vocab[a + b] = -1
        pairs.merge((a, b))
    return merges


def extend(base_dir: Path, texts: Iterable[str], add: int, out: Path, *, min_frequency: int = TOKENIZER.min_frequency,
           source: dict | None = None) -> VocabExtension:
    """Write `out`: the base tokenizer folder with up to `add` new Dutch tokens learnt on `texts`."""
    base_dir, out = Path(base_dir), Path(out)
    base_file = base_dir / "tokenizer.json"
    if not base_file.is_file():
        raise GptnlError(f"{base_dir}: no tokenizer.json (a base model's folder, or a tokenizer folder)")
    if add < 1:
        raise GptnlError(f"--add {add}: add at least one token")
    try:
        text = base_file.read_text(encoding="utf-8")
        data, tok = json.loads(text), Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 (tokenizers raises bare Exception on a bad file)
        raise GptnlError(f"{base_file}: cannot be loaded ({str(exc).splitlines()[0][:200]})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise GptnlError(f"{base_file}: a {model.get('type')} tokenizer; only BPE tokenizers (Llama, Mistral, "
                         "Salamandra, EuroLLM, gptnl's own) can be extended")
    merges = learn_merges(tok, texts, add, min_frequency)
    if not merges:
        raise GptnlError(f"the corpus holds no pair seen {min_frequency} times that the base lacks as a token")
    ids = [*model["vocab"].values(), *(t["id"] for t in data.get("added_tokens") or [])]
    first = max(ids) + 1
    added = []
    as_strings = bool(model["merges"]) and isinstance(model["merges"][0], str)
    for n, (a, b) in enumerate(merges):
        model["vocab"][a + b] = first + n
        model["merges"].append(f"{a} {b}" if as_strings else [a, b])
        added.append(AddedToken(token=a + b, id=first + n, parts=[t.id for t in tok.model.tokenize(a + b)]))
    out.mkdir(parents=True, exist_ok=True)
    for extra in base_dir.iterdir():  # its config, special tokens map, chat template
        if extra.name.startswith(("tokenizer", "special_tokens_map")) and extra.is_file() and extra != base_file:
            shutil.copy2(extra, out / extra.name)
    atomic_write_text(out / "tokenizer.json", json.dumps(data, ensure_ascii=False, indent=2))
    ext = VocabExtension(base=str(base_dir.resolve()), base_checksum=checksum(base_dir),
                         checksum=checksum(out), base_vocab_size=first,
                         vocab_size=first + len(added), added=added)
    atomic_write_text(out / EXTENSION, ext.model_dump_json(indent=2))
    write_manifest(out, TokenizerManifest(
        consumed=TokenizerInputs(base=ext.base, base_checksum=ext.base_checksum, **(source or {})),
        produced=TokenizerOutputs(vocab_size=ext.vocab_size, checksum=ext.checksum, added=len(added)),
        config={"add": add, "min_frequency": min_frequency}))
    return ext


def read_extension(tokenizer_dir: Path) -> VocabExtension | None:
    """The folder's extension record, or None for a tokenizer that extends nothing."""
    path = Path(tokenizer_dir) / EXTENSION
    if not path.is_file():
        return None
    try:
        return VocabExtension.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise GptnlError(f"{path}: not a vocabulary extension record ({str(exc).splitlines()[0]})") from None


def extend_rows(weight: torch.Tensor, ext: VocabExtension, rows: int) -> torch.Tensor:
    """`weight` (the base's embedding or output matrix) grown to `rows`: each added token's row the
    mean of its pieces' rows. A base whose matrix is padded past its tokenizer (rows that are no
    token) gives those rows to the new tokens first; rows past everything start as the mean token."""
    n = weight.shape[0]
    if n < ext.base_vocab_size:
        raise GptnlError(f"the base model has {n} embedding rows, fewer than the {ext.base_vocab_size} ids of the "
                         f"tokenizer its extension ({ext.base}) was made from")
    grown = weight.new_empty((max(rows, n), weight.shape[1]))
    grown[:n] = weight
    grown[n:] = weight[: ext.base_vocab_size].mean(dim=0)
    for t in ext.added:
        grown[t.id] = weight[t.parts].mean(dim=0)
    return grown
