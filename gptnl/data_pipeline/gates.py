"""The first gates: malformed input, the licence policy, and opt-outs. Each refusal's reason is
what the ledger and the data card show."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.config import LicencePolicy
from gptnl.data_pipeline.ledger import refuse
from gptnl.data_pipeline.licences import LicenceGate


class MalformedGate(BaseFilter):
    name = "🧱 malformed"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        what = doc.metadata.get("malformed")
        return refuse(doc, "malformed", f"{doc.metadata['location']}: {what}") if what else True


class LicenceFilter(BaseFilter):
    name = "⚖️ licence"

    def __init__(self, policy: LicencePolicy, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.gate = LicenceGate(policy)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        decision = self.gate.decide(doc.metadata.get("licence"))
        if not decision.admitted:
            category, _, detail = decision.reason.partition(" (")
            return refuse(doc, category, detail.rstrip(")"))
        doc.metadata["licence"] = decision.licence
        doc.metadata["attribution"] = decision.terms.attribution
        doc.metadata["share_alike"] = decision.terms.share_alike
        return True


def read_blocklist(path: Path | None) -> frozenset[str]:
    if path is None or not Path(path).is_file():
        return frozenset()
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line)


def blocked(doc_id: str, url: str | None, blocklist: frozenset[str]) -> str | None:
    """Which blocklist entry matches a document (by id, url or `domain:host`), or None."""
    if doc_id in blocklist:
        return f"id {doc_id}"
    if url and url in blocklist:
        return f"url {url}"
    host = (urlparse(url).hostname or "") if url else ""
    while host:
        if f"domain:{host}" in blocklist:
            return f"domain {host}"
        host = host.partition(".")[2]
    return None


class OptOutFilter(BaseFilter):
    """TDM reservations (DSM directive art. 4) and the blocklist of ids, urls and domains."""

    name = "✋ opt-out"

    def __init__(self, blocklist: frozenset[str], exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.blocklist = blocklist

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("tdm_reservation"):
            return refuse(doc, "opt-out", "text and data mining reserved")
        match = blocked(doc.id, doc.metadata.get("url"), self.blocklist)
        return refuse(doc, "opt-out", f"blocklist: {match}") if match else True
