"""Normalisation: mojibake repaired, NFC, whitespace tidied, content kept."""

import unicodedata

import pytest

from gptnl.data_pipeline.normalise import normalise


@pytest.mark.parametrize("raw, clean", [
    ("CafÃ© in Ã©Ã©n dag", "Café in één dag"),                        # UTF-8 read as Latin-1
    ("De gemeente  heeft\t\tbesloten .", "De gemeente heeft besloten ."),
    ("Regel één   \r\nRegel twee\r\n\r\n\r\n\r\nNieuwe alinea", "Regel één\nRegel twee\n\nNieuwe alinea"),
    ("zero\u200bwidth\ufeff", "zerowidth"),
    ("Prijs:\u00a0€\u00a05", "Prijs: € 5"),
    ("Hij zei: ‘ja’ en “nee”.", "Hij zei: ‘ja’ en “nee”."),                # typographic quotes are kept
    ("Tom &amp; Jerry", "Tom & Jerry"),
])
def test_normalises(raw, clean):
    assert normalise(raw) == clean


def test_nfc():
    decomposed = unicodedata.normalize("NFD", "coördinatie en één café")
    assert normalise(decomposed) == "coördinatie en één café"


def test_idempotent_on_the_sample():
    import json

    from conftest import SAMPLE

    for path in SAMPLE.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            once = normalise(text)
            assert normalise(once) == once
            assert len(once) >= 0.95 * len(text)
