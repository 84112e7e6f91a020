"""The PII step: every finding of `gptnl.pii` replaced (person names too, by rules and an optional
local NER model), counts per kind kept on the document (for the card)
and in the run's stats."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gptnl import pii
from gptnl.config import NerBackend


class PiiScrubber(PipelineStep):
    name = "🕵️ PII"
    type = "✂️ - FORMAT"

    def __init__(self, mode: str = "placeholder", seed: int = 0, names: bool = False, ner: NerBackend | None = None):
        super().__init__()
        self.mode, self.seed, self.names, self.ner = mode, seed, names, ner
        self._model = None

    def _names(self, text: str, counts) -> str:
        """Names last, on the text whose other PII is replaced: their counts stay as they were."""
        if self.ner is not None and self._model is None:
            from gptnl.ner import NameModel  # loaded in the worker, never pickled with the step

            self._model = NameModel(self.ner)
        extra = self._model.find(text) if self._model is not None else []
        text, n = pii.redact_names(text, self.mode, seed=self.seed, extra=extra, rules=self.names)
        if n:
            counts[pii.NAME] = n
        return text

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.text, counts = pii.redact(doc.text, self.mode, seed=self.seed)
                if self.names or self.ner is not None:
                    doc.text = self._names(doc.text, counts)
            doc.metadata["pii"] = dict(counts)
            for kind, n in counts.items():
                self.stat_update(f"pii/{kind}", value=n)
            yield doc
