"""C4-style boilerplate rules for Dutch web text: C4's policy-line rule only knows English
phrases ("privacy policy", "uses cookies"), so Dutch cookie walls and footers pass it. Lines with
Dutch policy phrases are removed; a document that is mostly such lines, or mostly menu items
(short lines without sentence punctuation) by word count, is refused. Counting words rather than
lines spares letters, whose address blocks are short lines too."""

from __future__ import annotations

import re

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.data_pipeline.ledger import refuse

POLICY_PHRASES = (
    "cookie", "privacyverklaring", "privacybeleid", "privacystatement", "algemene voorwaarden",
    "alle rechten voorbehouden", "disclaimer", "javascript", "terug naar boven", "lorem ipsum",
)
_POLICY = re.compile("|".join(re.escape(p) for p in POLICY_PHRASES), re.IGNORECASE)
_SENTENCE_END = (".", "!", "?", ":", ";", "…", '"', "”", "’", ")")


class DutchBoilerplateFilter(BaseFilter):
    name = "🍪 boilerplate"

    def __init__(self, max_policy_line_share: float = 0.3, max_menu_line_share: float = 0.5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.max_policy, self.max_menu = max_policy_line_share, max_menu_line_share

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lines = doc.text.split("\n")
        content = [line for line in lines if line.strip()]
        if not content:
            return refuse(doc, "boilerplate", "no text")
        policy = [line for line in content if _POLICY.search(line)]
        if len(policy) / len(content) >= self.max_policy:
            return refuse(doc, "boilerplate", f"{len(policy)} of {len(content)} lines are cookie or policy text")
        menu = [line for line in content if len(line.split()) <= 3 and not line.rstrip().endswith(_SENTENCE_END)]
        menu_words, words = sum(len(line.split()) for line in menu), sum(len(line.split()) for line in content)
        if len(menu) >= 5 and menu_words / words >= self.max_menu:
            return refuse(doc, "boilerplate", f"{len(menu)} of {len(content)} lines are menu items")
        if policy:
            doc.text = "\n".join(line for line in lines if not _POLICY.search(line))
            self.stat_update("policy_lines_removed", value=len(policy))
        return True
