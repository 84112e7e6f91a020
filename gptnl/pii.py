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


# Person names. Found only where Dutch text marks a name as one: after a title or salutation
# ("Geachte heer Hoekstra", "mevr. De Vries", "dhr. J. Jansen"), on the line under a closing
# formula (a signature), after "namens" and "mijn naam is". Precision comes before recall (a wrong
# finding removes text), so a candidate that holds a function, organisation or street word is left
# whole. Names are found on text whose other PII is already replaced, so those counts never change.
NAME = "NAME"
_UP, _LOW = "A-ZÀ-ÖØ-Þ", "a-zß-öø-ÿ"
_WORD = rf"[{_UP}][{_LOW}]+(?:['’][{_LOW}]+)?(?:-[{_UP}][{_LOW}]+)*"
_TUSSEN = r"(?:[Vv]an|[Dd]e|[Dd]er|[Dd]en|[Tt]er|[Tt]en|[Tt]e|[Hh]et|in|op|['’]t|[Ll]a|[Ll]e|[Dd]u|[Dd]a|[Vv]on|[Ee]l|[Aa]l)"  # noqa: E501
_INITIALS = rf"[{_UP}]\.(?:[ \t]?-?[{_UP}]\.)*[ \t]?"  # noqa: E501 one loop: "J.", "J.P.", "J. P.", "J.-P." (no backtracking blow-up)
_SURNAME = rf"(?:{_TUSSEN}[ \t]+){{0,3}}{_WORD}(?:-(?:{_TUSSEN}[ \t]+){{0,2}}{_WORD})?"
_PERSON = rf"(?:{_INITIALS}|(?:{_WORD}[ \t]+){{1,2}}(?={_TUSSEN}[ \t]|[{_UP}]))?{_SURNAME}"
_TITLE = (r"(?:heer|[Mm]evrouw|[Mm]eneer|[Mm]evr\.|[Mm]w\.|[Mm]ej\.|[Dd]hr\.|[Mm]r\.|[Dd]r\.|[Dd]rs\.|[Ii]r\.|"
          r"[Ii]ng\.|[Pp]rof\.|[Dd]s\.|[Jj]uffrouw)")
_TITLES = rf"(?<![\w.]){_TITLE}(?:[ \t]+(?:en[ \t]+)?{_TITLE})*[ \t]+"
_CLOSING = (r"(?im)^[ \t]*(?:(?:met[ \t]+)?(?:vriendelijke|hartelijke|collegiale|beste|warme)[ \t]+groet(?:en)?|"
            r"hoogachtend|groet(?:en|jes)?|mvg)[ \t]*,?[ \t]*\n(?:[ \t]*\n)*[ \t]*")
_NAME_CUES = [  # (pattern ending where the name starts, at least this many name parts)
    (re.compile(_TITLES), 1),
    (re.compile(_CLOSING + rf"(?:{_TITLE}[ \t]+)*"), 2),
    (re.compile(rf"(?<!\w)[Nn]amens[ \t]+(?:{_TITLE}[ \t]+)*"), 2),
    (re.compile(r"(?<!\w)[Mm]ijn[ \t]+naam[ \t]+is[ \t]+"), 2),
]
_PERSON_AT = re.compile(_PERSON)
_TUSSEN_AT = re.compile(_TUSSEN)
_NOT_A_NAME = frozenset("""
    voorzitter burgemeester minister staatssecretaris wethouder directeur secretaris griffier president
    commissaris koning koningin prins prinses rector decaan deken officier rechter advocaat notaris dokter
    pastoor dominee professor ombudsman gemeente provincie college ministerie raad rijk staat team afdeling
    stichting vereniging bestuur directie commissie dienst bureau sector cluster unit loket wijkteam politie
    belastingdienst rijkswaterstaat waterschap zaken heer god jezus christus u uw wij ik hij zij ons onze mijn
    de het een deze die dit dat hierbij namens graag dank bedankt excellentie edelachtbare hoogheid
    """.split())
_NOT_A_NAME_END = re.compile(
    r"(?:straat|weg|laan|plein|kade|gracht|singel|park|plantsoen|dreef|pad|steeg|dijk|markt|brug|baan|school|"
    r"lyceum|college|ziekenhuis|kliniek|centrum|instituut|prijs|fonds|stichting|museum|zaal|zaken|dienst|beheer|"
    r"loket|team|bureau|commissie|raad|waterstaat|gemeente|afdeling|groep|bedrijf|vereniging|kerk|haven)$", re.I)


def _name_span(text: str, start: int, min_parts: int) -> tuple[int, int] | None:
    """The name that starts at `start`, or None where the words there are not plainly a name."""
    m = _PERSON_AT.match(text, start)
    if not m:
        return None
    words = re.findall(rf"[{_UP}{_LOW}'’.]+", m.group())
    if len(words) < min_parts and not re.match(_INITIALS, m.group()):
        return None
    for part in re.split(r"[ \t\-]+", m.group()):
        plain = part.strip(".").lower()
        if _TUSSEN_AT.fullmatch(part):
            continue
        if plain in _NOT_A_NAME or _NOT_A_NAME_END.search(plain):
            return None
    parts = re.split(r"[ \t\-]+", m.group())
    if all(_TUSSEN_AT.fullmatch(w) for w in parts):
        return None
    if _TUSSEN_AT.fullmatch(parts[0]) and sum(not _TUSSEN_AT.fullmatch(w) for w in parts) > 1:
        return None  # "De Bibliotheek Lindeveld": a first name is never "De" or "Van"
    end = m.end()
    if end < len(text) and (text[end].isalnum() or text[end] in "@_/"):
        return None  # a longer word (a code, an address) begins here
    return m.start(), end


def find_names(text: str) -> list[Finding]:
    """Person names where the text marks them (titles, salutations, signatures, "namens", "mijn naam is"),
    non-overlapping, in text order."""
    spans: dict[int, int] = {}
    for cue, min_parts in _NAME_CUES:
        for m in cue.finditer(text):
            span = _name_span(text, m.end(), min_parts)
            if span and spans.get(span[0], 0) < span[1]:
                spans[span[0]] = span[1]
    found, last = [], -1
    for start, end in sorted(spans.items()):
        if start >= last:
            found.append(Finding(NAME, start, end, text[start:end]))
            last = end
    return found


def redact_names(text: str, mode: Literal["placeholder", "surrogate"] = "placeholder", *, seed: int = 0,
                 extra: list[Finding] = (), rules: bool = True) -> tuple[str, int]:
    """`text` with every person name replaced (`<NAME>`, or a made-up nl_NL name that is the same for
    the same name within one call), and how many. `extra`: findings of an NER model, merged in
    where they overlap no rule finding; `rules=False`: those alone."""
    if mode not in ("placeholder", "surrogate"):
        raise ValueError(f"unknown redaction mode {mode!r}; allowed: placeholder, surrogate")
    findings = find_names(text) if rules else []
    for f in sorted(extra, key=lambda f: f.start):
        if not any(f.start < g.end and g.start < f.end for g in findings):
            findings.append(f)
    chosen: dict[str, str] = {}
    out, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        if mode == "placeholder":
            replacement = f"<{NAME}>"
        else:
            replacement = chosen.setdefault(f.text, _name_surrogate(f.text, seed))
        out += [text[pos:f.start], replacement]
        pos = f.end
    out.append(text[pos:])
    return "".join(out), len(findings)


def _name_surrogate(value: str, seed: int) -> str:
    from faker import Faker

    fake = Faker("nl_NL")
    fake.seed_instance(int.from_bytes(hashlib.sha256(f"{seed}:{NAME}:{value}".encode()).digest()[:8], "big"))
    return fake.last_name() if " " not in value.strip() else fake.name()
