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

from stdnum import iban, luhn
from stdnum.nl import bsn

KINDS = ("EMAIL", "IBAN", "CREDIT_CARD", "BSN", "PHONE", "ADDRESS", "LICENCE_PLATE", "IP_ADDRESS")


def valid_bsn(number: str) -> bool:
    """The 11-proef (python-stdnum's `nl.bsn`): 9 digits, and never all zeros."""
    digits = re.sub(r"[\s.\-]", "", number)
    if len(digits) != 9 or not digits.isdigit() or digits == "000000000":
        return False
    return bsn.is_valid(digits)


def valid_iban(text: str) -> bool:
    """ISO 13616 for every country in the SWIFT registry (python-stdnum's `iban`): the country's length
    and BBAN structure, mod 97. Not the bank registries: a real account at an unlisted bank is still guarded."""
    return iban.is_valid(re.sub(r"\s", "", text), check_country=False)


def luhn_valid(number: str) -> bool:
    """A card number: 13 to 19 digits that pass the Luhn check."""
    digits = re.sub(r"[\s\-]", "", number)
    return digits.isdigit() and 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _iban_spans(text: str):
    """(start, end, valid) of IBAN-shaped strings. One directly followed by more letters or digits is still
    an IBAN when a prefix of it is: the longest valid prefix (on a character of the match) is the finding."""
    for m in _IBAN_SHAPE.finditer(text):
        positions = [i for i in range(m.start(), m.end()) if not text[i].isspace()]
        for n in range(min(len(positions), 34), 14, -1):
            end = positions[n - 1] + 1
            if valid_iban(text[m.start():end]):
                yield m.start(), end, True
                break
        else:
            yield (*m.span(), False)


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
_IBAN_SHAPE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?[A-Za-z0-9]*")
_DETECTORS: list[tuple[str, re.Pattern | None, Callable[[str], bool] | None]] = [
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"), None),
    ("IBAN", None, None),  # by _iban_spans: a valid IBAN glued to more characters is found too
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
        spans = _iban_spans(text) if pattern is None else (
            (m.start(), m.end(), validator is None or validator(m.group())) for m in pattern.finditer(text))
        for start, end, valid in spans:
            if any(start < c_end and c_start < end for c_start, c_end in claimed):
                continue
            if not valid:
                if kind in _CLAIM_WHEN_INVALID:
                    claimed.append((start, end))
                continue
            claimed.append((start, end))
            taken.append(Finding(kind, start, end, text[start:end]))
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
