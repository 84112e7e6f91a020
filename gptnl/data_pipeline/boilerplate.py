"""C4-style boilerplate rules for Dutch web text: C4's policy-line rule only knows English
phrases ("privacy policy", "uses cookies"), so Dutch cookie walls and footers pass it.

A line is policy text when it holds a Dutch policy phrase and is footer-like: short (a footer,
a button, a menu of legal links), or a cookie wall (a paragraph dense with such phrases). A
sentence of prose that mentions cookies, a privacy policy or "terug naar boven" is not, however
long its line: extracted text often puts a whole article on one line. Policy lines are removed;
a document is refused when policy lines are most of it (by lines and by words), or when menu
items (short lines without sentence punctuation) hold most of its words. Counting words spares
letters, whose address blocks are short lines too, and one-line articles with a short footer."""

from __future__ import annotations

import re

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.data_pipeline.ledger import refuse

POLICY_PHRASES = (
    "cookie", "privacyverklaring", "privacybeleid", "privacystatement", "algemene voorwaarden",
    "alle rechten voorbehouden", "disclaimer", "javascript", "terug naar boven", "lorem ipsum",
    "privacy policy", "terms of use",  # C4's English phrases (its cookie ones contain "cookie")
)
_POLICY = re.compile("|".join(re.escape(p) for p in POLICY_PHRASES), re.IGNORECASE)
_SENTENCE_END = (".", "!", "?", ":", ";", "…", '"', "”", "’", ")")
FOOTER_WORDS = 15           # "© 2025 Gemeente Zutphen | Privacyverklaring | Cookies | Toegankelijkheid" and shorter
WALL_MIN_PHRASES = 3        # a cookie wall names cookies, consent and the policy again and again …
WALL_WORDS_PER_PHRASE = 25  # … at least once every 25 words; prose mentions them once in a while


def is_policy_line(line: str) -> bool:
    """Whether a line is footer or cookie-wall text (what the filter removes)."""
    hits = len(_POLICY.findall(line))
    if not hits:
        return False
    words = len(line.split())
    return words <= FOOTER_WORDS or (hits >= WALL_MIN_PHRASES and hits * WALL_WORDS_PER_PHRASE >= words)


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
        words = sum(len(line.split()) for line in content)
        policy = [line for line in content if is_policy_line(line)]
        policy_words = sum(len(line.split()) for line in policy)
        if len(policy) / len(content) >= self.max_policy and policy_words / words >= self.max_policy:
            return refuse(doc, "boilerplate", f"{len(policy)} of {len(content)} lines are cookie or policy text")
        menu = [line for line in content if len(line.split()) <= 3 and not line.rstrip().endswith(_SENTENCE_END)]
        if len(menu) >= 5 and sum(len(line.split()) for line in menu) / words >= self.max_menu:
            return refuse(doc, "boilerplate", f"{len(menu)} of {len(content)} lines are menu items")
        if policy:
            doc.text = "\n".join(line for line in lines if not is_policy_line(line))
            self.stat_update("policy_lines_removed", value=len(policy))
        return True
