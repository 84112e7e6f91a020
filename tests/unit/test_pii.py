"""Dutch PII: checksum validators (property-tested), detectors on Dutch text, redaction."""

import json
import random
import string

import pytest
from conftest import SAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st

from gptnl import pii

WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)


def make_bsn(first8: str) -> str | None:
    """Complete 8 digits to a valid BSN, or None when no check digit fits."""
    check = sum(int(d) * w for d, w in zip(first8, WEIGHTS, strict=True)) % 11
    return first8 + str(check) if check < 10 and first8 + str(check) != "000000000" else None


def make_iban(country: str, bban: str) -> str:
    n = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - n % 97:02d}{bban}"


def make_card(prefix15: str) -> str:
    for d in "0123456789":
        if pii.luhn_valid(prefix15 + d):
            return prefix15 + d
    raise AssertionError("no Luhn digit")


digits = st.text(alphabet=string.digits, min_size=8, max_size=8)


@given(digits, st.integers(0, 8), st.integers(1, 9))
def test_bsn_elfproef_accepts_valid_and_catches_single_digit_errors(first8, pos, delta):
    bsn = make_bsn(first8)
    if bsn is None:
        return
    assert pii.valid_bsn(bsn)
    assert pii.valid_bsn(f"{bsn[:4]}.{bsn[4:6]}.{bsn[6:]}")
    wrong = bsn[:pos] + str((int(bsn[pos]) + delta) % 10) + bsn[pos + 1 :]
    assert not pii.valid_bsn(wrong)


@given(st.text(alphabet=string.ascii_uppercase, min_size=4, max_size=4),
       st.text(alphabet=string.digits, min_size=10, max_size=10), st.integers(4, 17), st.data())
def test_iban_mod97_accepts_valid_and_catches_substitutions(bank, account, pos, data):
    iban = make_iban("NL", bank + account)
    assert pii.valid_iban(iban) and pii.valid_iban(" ".join(iban[i : i + 4] for i in range(0, 18, 4)))
    alphabet = string.ascii_uppercase if pos < 8 else string.digits
    new = data.draw(st.sampled_from([c for c in alphabet if c != iban[pos]]))
    assert not pii.valid_iban(iban[:pos] + new + iban[pos + 1 :])


@given(st.text(alphabet=string.digits, min_size=15, max_size=15), st.integers(0, 15), st.integers(1, 9))
def test_luhn_accepts_valid_and_catches_single_digit_errors(prefix, pos, delta):
    card = make_card(prefix)
    assert pii.luhn_valid(card)
    assert not pii.luhn_valid(card[:pos] + str((int(card[pos]) + delta) % 10) + card[pos + 1 :])


@settings(max_examples=200)
@given(st.text(alphabet=string.digits, min_size=9, max_size=9))
def test_nine_digit_numbers_are_bsn_only_when_checksum_valid(number):
    found = [f.kind for f in pii.find(f"Ordernummer {number} is verzonden.")]
    assert ("BSN" in found) == pii.valid_bsn(number)


@pytest.mark.parametrize("text, kind, value", [
    ("Mijn BSN is 123456782, klopt dat?", "BSN", "123456782"),
    ("BSN: 1234.56.782.", "BSN", "1234.56.782"),
    ("Maak het over naar NL91 ABNA 0417 1643 00 voor vrijdag.", "IBAN", "NL91 ABNA 0417 1643 00"),
    ("IBAN NL91ABNA0417164300.", "IBAN", "NL91ABNA0417164300"),
    ("Mail naar j.de.vries@gemeente-zuiderveen.nl als het kan.", "EMAIL", "j.de.vries@gemeente-zuiderveen.nl"),
    ("Bel 06-12345678 of later.", "PHONE", "06-12345678"),
    ("Bel +31 6 12345678 of later.", "PHONE", "+31 6 12345678"),
    ("Bel 020-1234567 tijdens kantooruren.", "PHONE", "020-1234567"),
    ("Bel 0031 (0)20 123 4567 tijdens kantooruren.", "PHONE", "0031 (0)20 123 4567"),
    ("Het adres is Kerkstraat 12, 3511 AB Utrecht.", "ADDRESS", "12, 3511 AB"),
    ("Stuur het naar 3511AB 12a.", "ADDRESS", "3511AB 12a"),
    ("De auto met kenteken 12-TBX-3 stond fout.", "LICENCE_PLATE", "12-TBX-3"),
    ("De auto met kenteken GB-12-DD stond fout.", "LICENCE_PLATE", "GB-12-DD"),
    ("Ingelogd vanaf 145.97.12.3 om acht uur.", "IP_ADDRESS", "145.97.12.3"),
    ("Betaald met 4111 1111 1111 1111 gisteren.", "CREDIT_CARD", "4111 1111 1111 1111"),
])
def test_finds_dutch_pii(text, kind, value):
    assert [(f.kind, f.text) for f in pii.find(text)] == [(kind, value)]


@pytest.mark.parametrize("text", [
    "Ordernummer 123456789 is verzonden.",          # fails the 11-proef
    "Rekening NL91 ABNA 0417 1643 01 bestaat niet.",  # fails mod-97
    "Kaart 4111 1111 1111 1112 is ongeldig.",        # fails Luhn
    "Het router-adres is 192.168.1.1 thuis.",        # private IP: not personal
    "Versie 1.2.3 kwam uit op 999.10.1.1 seconden.",  # not IP addresses
    "In 2024 woonden er 3511 mensen in het dorp.",   # a number, not a postcode
    "Het is 12-10-2025 vandaag.",                    # a date, not a plate or phone
])
def test_leaves_lookalikes_alone(text):
    assert pii.find(text) == []


def test_bundled_bad_material_is_found_and_clean_sample_is_not():
    bad = [json.loads(line) for line in (SAMPLE / "bad" / "bad.jsonl").read_text().splitlines()]
    for doc in bad:
        kinds = {f.kind for f in pii.find(doc["text"])}
        if doc["expected"] == "pii-bsn":
            assert "BSN" in kinds, doc["id"]
        if doc["expected"] == "pii-iban":
            assert "IBAN" in kinds, doc["id"]
    for path in sorted(SAMPLE.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            assert pii.find(doc["text"]) == [], doc["id"]


def test_placeholder_redaction_counts_and_removes_everything():
    text = "BSN 123456782, IBAN NL91ABNA0417164300, mail a@b.nl, nogmaals BSN 123456782."
    out, counts = pii.redact(text)
    assert out == "BSN <BSN>, IBAN <IBAN>, mail <EMAIL>, nogmaals BSN <BSN>."
    assert counts == {"BSN": 2, "IBAN": 1, "EMAIL": 1}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["123456782", "NL91ABNA0417164300", "06-12345678", "a.b@c.nl", "woord", "en"]),
                min_size=1, max_size=12), st.integers(0, 3))
def test_surrogates_are_consistent_deterministic_and_valid(parts, seed):
    text = " ".join(parts)
    out1, counts = pii.redact(text, "surrogate", seed=seed)
    out2, _ = pii.redact(text, "surrogate", seed=seed)
    assert out1 == out2
    for original in ("123456782", "NL91ABNA0417164300", "06-12345678", "a.b@c.nl"):
        assert original not in out1.split()
    found = pii.find(out1)
    assert [f for f in found if f.kind == "BSN"] == [] or all(pii.valid_bsn(f.text) for f in found if f.kind == "BSN")
    if parts.count("123456782") > 1:  # the same value gets the same surrogate
        bsns = [f.text for f in found if f.kind == "BSN"]
        assert len(set(bsns)) <= 1


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="allowed: placeholder, surrogate"):
        pii.redact("x", "hash")


def test_random_text_never_crashes():
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + " .-+@()/,\n"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        out, counts = pii.redact(text)
        assert sum(counts.values()) == len(pii.find(text))
