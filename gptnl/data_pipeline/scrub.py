"""The PII step: every finding of `gptnl.pii` replaced, counts per kind kept on the document
(for the card) and in the run's stats."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gptnl import pii


class PiiScrubber(PipelineStep):
    name = "🕵️ PII"
    type = "✂️ - FORMAT"

    def __init__(self, mode: str = "placeholder", seed: int = 0):
        super().__init__()
        self.mode, self.seed = mode, seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.text, counts = pii.redact(doc.text, self.mode, seed=self.seed)
            doc.metadata["pii"] = dict(counts)
            for kind, n in counts.items():
                self.stat_update(f"pii/{kind}", value=n)
            yield doc
