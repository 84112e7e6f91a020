"""Dutch personal data in text: find it, prove it (checksums), and replace it.

Shared by the corpus pipeline, the serving output guard, the privacy evals and the instruction
data, so it lives below all of them. A number is only a BSN, IBAN or card number when its
checksum says so (11-proef, ISO 13616 mod-97, Luhn): a 9-digit order number is left alone.
Replacement is either a typed placeholder (`<BSN>`) or a surrogate from Faker's `nl_NL` locale
that is the same for the same value within one call, so a text stays coherent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

KINDS = ("EMAIL", "IBAN", "CREDIT_CARD", "BSN", "PHONE", "ADDRESS", "LICENCE_PLATE", "IP_ADDRESS")

# IBAN lengths for the countries a Dutch corpus meets most (SWIFT IBAN registry).
IBAN_LENGTHS = {"NL": 18, "BE": 16, "DE": 22, "FR": 27, "LU": 20, "GB": 22, "ES": 24, "IT": 27, "AT": 20, "IE": 22,
                "DK": 18, "SE": 24, "NO": 15, "FI": 18, "PL": 28, "PT": 25, "CH": 21}


def valid_bsn(number: str) -> bool:
    """The 11-proef: 9 digits, 9·d1 + 8·d2 + … + 2·d8 − 1·d9 divisible by 11 (and not all zeros)."""
    digits = re.sub(r"[\s.\-]", "", number)
    if len(digits) != 9 or not digits.isdigit() or digits == "000000000":
        return False
    total = sum(int(d) * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True))
    return total % 11 == 0


def valid_iban(iban: str) -> bool:
    """ISO 13616: known country length, and the rearranged number mod 97 equals 1."""
    s = re.sub(r"\s", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", s) or IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def luhn_valid(number: str) -> bool:
    digits = re.sub(r"[\s\-]", "", number)
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _public_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


_PLATE_LETTER = "[BDFGHJKLNPRSTVXZ]"  # letters used on Dutch plates since 1951 (no vowels, C, Q, W, M, Y)
_SIDECODES = ("LL-DD-DD", "DD-DD-LL", "DD-LL-DD", "LL-DD-LL", "LL-LL-DD", "DD-LL-LL", "DD-LLL-D", "D-LLL-DD",
              "LL-DDD-L", "L-DDD-LL", "LLL-DD-L", "L-DD-LLL", "D-LL-DDD", "DDD-LL-D")
_PLATE = "|".join("".join({"L": _PLATE_LETTER, "D": r"\d"}.get(c, c) for c in code) for code in _SIDECODES)
_POSTCODE = r"[1-9]\d{3} ?(?!SA|SD|SS)[A-Z]{2}"

# (kind, pattern, validator): earlier kinds win where matches overlap.
# An IBAN- or card-shaped string that fails its checksum still claims its span, so that its
# pieces are not taken for a phone number.
_CLAIM_WHEN_INVALID = {"IBAN", "CREDIT_CARD"}
_DETECTORS: list[tuple[str, re.Pattern, Callable[[str], bool] | None]] = [
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"), None),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), valid_iban),
    ("CREDIT_CARD", re.compile(r"(?<![\d\-])(?:\d{4}[ \-]?){3}\d{1,7}(?![\d\-])"), luhn_valid),
    ("BSN", re.compile(r"(?<![\d.\-])(?:\d{9}|\d{4}\.\d{2}\.\d{3}|\d{3}[ .\-]\d{3}[ .\-]\d{3})(?![\d\-]|\.\d)"),
     valid_bsn),
    ("PHONE", re.compile(r"(?<![\w+])(?:(?:\+|00)31[ \-]?(?:\(0\)[ \-]?)?|0)[1-9](?:[ \-]?\d){8}(?!\d)"), None),
    ("ADDRESS", re.compile(rf"\b{_POSTCODE}\s+\d{{1,5}}(?:[ -]?[a-zA-Z]\b)?|\b\d{{1,5}}[a-zA-Z]?,?\s+{_POSTCODE}\b"),
     None),
    ("LICENCE_PLATE", re.compile(rf"\b(?:{_PLATE})\b"), None),
    ("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), _public_ip),
]


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


def find(text: str, kinds: tuple[str, ...] = KINDS) -> list[Finding]:
    """Non-overlapping findings in text order; where two overlap, the kind listed first in KINDS wins."""
    taken: list[Finding] = []
    claimed: list[tuple[int, int]] = []
    for kind, pattern, validator in _DETECTORS:
        if kind not in kinds:
            continue
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in claimed):
                continue
            if validator is not None and not validator(m.group()):
                if kind in _CLAIM_WHEN_INVALID:
                    claimed.append(m.span())
                continue
            claimed.append(m.span())
            taken.append(Finding(kind, m.start(), m.end(), m.group()))
    return sorted(taken, key=lambda f: f.start)


def _surrogate(kind: str, value: str, seed: int) -> str:
    from faker import Faker

    fake = Faker("nl_NL")
    fake.seed_instance(int.from_bytes(hashlib.sha256(f"{seed}:{kind}:{value}".encode()).digest()[:8], "big"))
    if kind == "EMAIL":
        return fake.email(domain="example.nl")
    if kind == "IBAN":
        return fake.iban()
    if kind == "CREDIT_CARD":
        return fake.credit_card_number()
    if kind == "BSN":
        return fake.ssn()
    if kind == "PHONE":
        return fake.phone_number()
    if kind == "ADDRESS":
        return f"{fake.postcode()} {fake.building_number()}"
    if kind == "LICENCE_PLATE":
        return fake.license_plate()
    return fake.ipv4_public()


def redact(
    text: str, mode: Literal["placeholder", "surrogate"] = "placeholder", *, seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
) -> tuple[str, Counter]:
    """`text` with every finding replaced, and the count per kind."""
    if mode not in ("placeholder", "surrogate"):
        raise ValueError(f"unknown redaction mode {mode!r}; allowed: placeholder, surrogate")
    counts: Counter = Counter()
    chosen: dict[tuple[str, str], str] = {}
    out, pos = [], 0
    for f in find(text, kinds):
        counts[f.kind] += 1
        if mode == "placeholder":
            replacement = f"<{f.kind}>"
        else:
            replacement = chosen.setdefault((f.kind, f.text), _surrogate(f.kind, f.text, seed))
        out += [text[pos : f.start], replacement]
        pos = f.end
    out.append(text[pos:])
    return "".join(out), counts
