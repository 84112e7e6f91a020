"""Exact deduplication: the first document with a given normalised text is kept, later ones are
refused naming the one they duplicate. Within one task; near-duplicates are MinHash's job."""

from __future__ import annotations

import hashlib
import re

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.data_pipeline.ledger import refuse

_SPACE = re.compile(r"\s+")


def text_key(text: str) -> bytes:
    return hashlib.sha1(_SPACE.sub(" ", text.casefold()).strip().encode("utf-8")).digest()


class ExactDedupFilter(BaseFilter):
    name = "👯 exact dedup"

    def __init__(self, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.seen: dict[bytes, tuple[str, str]] = {}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        here = (doc.metadata["location"], doc.id)
        first = self.seen.setdefault(text_key(doc.text), here)
        return True if first == here else refuse(doc, "duplicate (exact)", f"of {first[1]}")
