"""The licence gate's decision: admitted with its obligations, or refused with a reason.

Fail closed: only ids the policy lists pass. The reason names what is wrong in the user's terms
(non-commercial, no derivatives, all rights reserved, unknown, missing), because the ledger and
the data card show it to people deciding whether to chase a better licence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gptnl.config import LicencePolicy, LicenceTerms


@dataclass(frozen=True)
class LicenceDecision:
    admitted: bool
    licence: str
    reason: str = ""
    terms: LicenceTerms | None = None


_REFUSALS = (
    (re.compile(r"(^|[-_ ])NC([-_ ]|$)", re.I), "non-commercial licence"),
    (re.compile(r"(^|[-_ ])ND([-_ ]|$)", re.I), "no-derivatives licence"),
    (re.compile(r"all[-_ ]rights[-_ ]reserved|alle rechten voorbehouden|proprietary", re.I), "all rights reserved"),
)


class LicenceGate:
    def __init__(self, policy: LicencePolicy):
        self.policy = policy
        self._allowed = {k.lower(): (k, v) for k, v in policy.allow.items()}
        self._public = {c.licence.lower(): c.licence for c in policy.public_domain.values()}

    def decide(self, licence: str | None) -> LicenceDecision:
        """Decide on one document's licence id (already resolved against its source's default)."""
        text = (licence or "").strip()
        if not text:
            return LicenceDecision(False, "", "licence missing")
        key = text.lower()
        if key in self._allowed:
            spdx, terms = self._allowed[key]
            return LicenceDecision(True, spdx, terms=terms)
        if key in self._public:
            return LicenceDecision(True, self._public[key], terms=LicenceTerms())
        for pattern, why in _REFUSALS:
            if pattern.search(text):
                return LicenceDecision(False, text, f"{why} ({text})")
        return LicenceDecision(False, text, f"unknown licence ({text}); not in the policy's allow-list")
