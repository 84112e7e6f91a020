"""Main text out of HTML pages read from WARC archives, by trafilatura (what FineWeb uses).

Runs after the licence and opt-out gates, so pages that would be refused anyway are not parsed.
A page with no main text (a menu, a login wall, an empty shell) is refused with that reason.
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.data_pipeline.ledger import refuse


def decode_html(body: bytes) -> str:
    """Bytes of a page as text, with the encoding the page declares or trafilatura detects."""
    from trafilatura.utils import decode_file

    return decode_file(body)


class HtmlExtractor(BaseFilter):
    name = "📰 html"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if not doc.metadata.get("html"):
            return True
        import trafilatura

        text = trafilatura.extract(doc.text, url=doc.metadata.get("url"), favor_precision=True,
                                   include_comments=False, include_tables=True, deduplicate=False)
        doc.metadata["html"] = False
        if not text or not text.strip():
            return refuse(doc, "html", "no main text in the page")
        doc.text = text
        self.stat_update("extracted")
        return True
