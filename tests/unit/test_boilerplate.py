"""Dutch boilerplate: cookie walls, footers and menus are refused or cut; prose that merely mentions
cookies, a privacy policy or "terug naar boven" is left whole, however long its lines."""

import json
from pathlib import Path

import pytest
from datatrove.data import Document

from gptnl.data_pipeline.boilerplate import DutchBoilerplateFilter, is_policy_line

PROSE = (Path(__file__).resolve().parents[1] / "fixtures" / "prose" / "ijssel.txt").read_text(encoding="utf-8").strip()
SAMPLE_BAD = Path(__file__).resolve().parents[2] / "data_pipeline" / "sample" / "bad" / "bad.jsonl"


def run(text: str) -> tuple[bool | tuple[bool, str], Document]:
    doc = Document(text=text, id="d", metadata={})
    return DutchBoilerplateFilter().filter(doc), doc


def test_long_single_line_prose_mentioning_footer_phrases_is_kept_whole():
    assert "\n" not in PROSE and len(PROSE.split()) > 3800
    assert "terug naar boven" in PROSE and "cookies" in PROSE and "privacybeleid" in PROSE
    verdict, doc = run(PROSE)
    assert verdict is True, doc.metadata.get("refusal")
    assert doc.text == PROSE


def test_a_paragraph_that_mentions_cookies_once_is_not_removed():
    text = ("De Deventer koek wordt al eeuwen gebakken.\n"
            "In de koffiehuizen aan de Brink krijgt men bij de thee tegenwoordig soms Amerikaanse cookies "
            "in plaats van een plak koek, tot verdriet van de oudere bakkers in de stad.\n"
            "De receptuur bleef lang geheim.")
    verdict, doc = run(text)
    assert verdict is True and doc.text == text


@pytest.mark.parametrize("line", [
    "Terug naar boven", "Cookie-instellingen", "Privacyverklaring", "© 2025 Webwinkel B.V. Alle rechten voorbehouden.",
    "Algemene voorwaarden | Privacyverklaring | Cookieverklaring | Disclaimer", "Privacy policy | Terms of use",
    # a cookie wall: a paragraph that is about little else
    "Wij gebruiken cookies en vergelijkbare technieken om onze website goed te laten werken. Door op 'Alle "
    "cookies accepteren' te klikken, gaat u akkoord met het plaatsen van alle cookies. Lees meer in onze "
    "cookieverklaring en ons privacybeleid.",
])
def test_footer_and_cookie_wall_lines_count(line):
    assert is_policy_line(line)


@pytest.mark.parametrize("line", [
    "De ijsvogel duikt pijlsnel in het water en vliegt met een visje in zijn snavel meteen terug naar boven, "
    "naar zijn vaste uitkijkpost boven het water.",
    PROSE,
])
def test_sentences_that_mention_a_phrase_do_not_count(line):
    assert not is_policy_line(line)


def test_footer_lines_are_cut_from_a_kept_document():
    body = PROSE[:2000]
    verdict, doc = run(f"{body}\nTerug naar boven\n© 2025 Uitgeverij De Rivier. Alle rechten voorbehouden.")
    assert verdict is True and doc.text == body


def test_the_sample_cookie_wall_and_footers_are_refused_as_before():
    docs = {d["id"]: d for d in map(json.loads, SAMPLE_BAD.read_text(encoding="utf-8").splitlines())
            if isinstance(d, dict) and str(d.get("id", "")).startswith("gptnl-bad-boilerplate")}
    reasons = {i: run(d["text"])[1].metadata.get("refusal") for i, d in docs.items()}
    assert reasons["gptnl-bad-boilerplate-01"] == "boilerplate (10 of 11 lines are cookie or policy text)"
    assert reasons["gptnl-bad-boilerplate-02"] == "boilerplate (22 of 23 lines are menu items)"
    assert reasons["gptnl-bad-boilerplate-03"] == "boilerplate (18 of 22 lines are menu items)"
