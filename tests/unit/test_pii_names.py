"""Person names in personal data: the rules of `gptnl.pii`, the local NER backend (`gptnl.ner`), the
corpus PII step, and the scores on the bundled test letters that the card reports."""

from __future__ import annotations

import pytest
import yaml
from datatrove.data import Document
from hypothesis import given, settings
from hypothesis import strategies as st

from gptnl import pii
from gptnl.config import NerBackend, load_recipe
from gptnl.data_pipeline.letters import LETTERS, detector, load_letters, score_names
from gptnl.data_pipeline.scrub import PiiScrubber
from gptnl.errors import GptnlError


def names(text: str) -> list[str]:
    return [f.text for f in pii.find_names(text)]


@pytest.mark.parametrize("text, expected", [
    ("Geachte heer Hoekstra,\n\nOp 3 maart", ["Hoekstra"]),
    ("Beste mevr. De Vries, uw pas is klaar.", ["De Vries"]),
    ("Wij spraken dhr. J. Jansen op het stadskantoor.", ["J. Jansen"]),
    ("Geachte mevrouw Van den Heuvel,", ["Van den Heuvel"]),
    ("Geachte mevrouw Jansen-de Vries,", ["Jansen-de Vries"]),
    ("Beste heer en mevrouw Verhoeven,", ["Verhoeven"]),
    ("Geachte prof. dr. H.A. de Boer,", ["H.A. de Boer"]),
    ("Met vriendelijke groet,\n\nGerrit Jan Boersma\nteamleider Afval", ["Gerrit Jan Boersma"]),
    ("Hoogachtend,\n\nmr. D.P. Wesseling\nsecretaris", ["D.P. Wesseling"]),
    ("Ik bel u namens Pieter Bakker over de afspraak.", ["Pieter Bakker"]),
    ("Mijn naam is Marco Hendriks en ik ben leerplichtambtenaar.", ["Marco Hendriks"]),
])
def test_finds_names_that_dutch_text_marks(text, expected):
    assert names(text) == expected


@pytest.mark.parametrize("text", [
    "Geachte heer, mevrouw,\n\nUw aanslag staat klaar.",
    "Geachte heer/mevrouw,",
    "Geachte mevrouw de Voorzitter,",
    "Ook de heer Burgemeester stelde vragen.",
    "Met vriendelijke groet,\n\nTeam Parkeerbeheer\ngemeente Zuiderveen",
    "Vriendelijke groet,\n\nDe Bibliotheek Lindeveld",
    "Met vriendelijke groet,\n\nnamens het college van burgemeester en wethouders",
    "Namens Gemeente Utrecht en Rijkswaterstaat Oost-Nederland informeren wij u.",
    "Het Dr. Lelylaan-viaduct is dicht; neem de tram vanaf de Prof. Gerbrandyweg.",
    "Het Dr. Albert Schweitzer Ziekenhuis verhuist naar de Dr. A.F. Philipsstraat.",
    "De Heer zij met u, en de heer des huizes zet koffie.",
    "Goedenavond, mevrouw. Stapt u even af?",
])
def test_leaves_words_that_only_look_like_names(text):
    assert names(text) == []


TOKENS = ["Geachte", "heer", "mevr.", "dhr.", "en", "J.", "A.C.", "J.-P.", "Van", "de", "der", "Jansen", "De",
          "Vries", "Team", "Met", "vriendelijke", "groet,", "namens", "Hoekstra-de", "\n", " ", ",", "-", "."]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_findings_are_names_in_text_order_without_overlap(text):
    found = pii.find_names(text)
    assert all(text[f.start:f.end] == f.text and f.text.strip() == f.text and f.text for f in found)
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))
    out, n = pii.redact_names(text)
    assert n == len(found) and out.count("<NAME>") >= n


@pytest.mark.timeout(60)
def test_long_runs_of_initials_titles_and_tussenvoegsels_take_no_time_to_refuse():
    """Regexes with nested repeats backtrack exponentially on a near miss ("A.A.A.…" with no surname)."""
    for text in ("dhr. " + "A." * 400 + " x", "Geachte heer " + "van " * 400 + "x", "heer en " * 2000 + "x",
                 "Met vriendelijke groet," + "\n \t" * 2000 + "x"):
        assert pii.find_names(text) == []


def test_names_are_replaced_after_the_other_kinds_which_stay_as_they_were():
    text = "Geachte heer Hoekstra,\n\nUw BSN 111222333 en IBAN NL91ABNA0417164300 staan genoteerd."
    before, counts = pii.redact(text)
    after, n = pii.redact_names(before)
    assert after == "Geachte heer <NAME>,\n\nUw BSN <BSN> en IBAN <IBAN> staan genoteerd."
    assert (dict(counts), n) == ({"BSN": 1, "IBAN": 1}, 1)


def test_surrogate_names_are_consistent_within_a_text():
    text = "Geachte heer Hoekstra,\n\nWij spraken dhr. Hoekstra eerder.\n\nMet vriendelijke groet,\n\nHenk Molenaar"
    out, n = pii.redact_names(text, "surrogate", seed=3)
    assert n == 3 and "Hoekstra" not in out and "Molenaar" not in out
    first, second = out.split("heer ")[1].split(",")[0], out.split("dhr. ")[1].split(" eerder")[0]
    assert first == second


def test_bundled_letters_have_true_spans_and_the_rules_meet_their_bar():
    letters = load_letters()
    assert len(letters) >= 30 and any(not r["names"] for r in letters)
    scores = score_names()
    assert scores.precision >= 0.95, scores.false_positives
    assert scores.recall >= 0.8, scores.missed


def test_letters_with_a_wrong_span_are_refused(tmp_path):
    bad = tmp_path / "letters.jsonl"
    bad.write_text('{"id": "x", "text": "Geachte heer Hoekstra,", "names": [[0, 5, "Hoekstra"]]}\n')
    with pytest.raises(GptnlError, match="span 0:5"):
        load_letters(bad)


def test_scrubber_counts_names_only_when_asked():
    doc = lambda: Document(text="Geachte heer Hoekstra,\n\nUw pas is klaar.", id="d", metadata={})  # noqa: E731
    on = next(PiiScrubber(names=True).run([doc()]))
    off = next(PiiScrubber().run([doc()]))
    assert on.text.startswith("Geachte heer <NAME>,") and on.metadata["pii"] == {"NAME": 1}
    assert off.text.startswith("Geachte heer Hoekstra,") and off.metadata["pii"] == {}


# --- the NER backend -------------------------------------------------------------------------------

NAME_WORDS = ["hoekstra", "jansen"]


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory):
    """A BERT token classifier built here, saved locally, never downloaded. Its weights are random
    except the embeddings and the classifier, which are set by hand so that the known outcome (the
    words in NAME_WORDS are B-PER, every other token O) tests the plumbing: offsets back to the
    text, labels, scores, chunking. It says nothing about how well a real Dutch NER model does."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("ner")
    words = ["geachte", "heer", "vandaag", "belde", "over", "de", "vergunning", ",", ".", *NAME_WORDS]
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(str(root / "vocab.txt"), do_lower_case=True)
    cfg = BertConfig(vocab_size=len(words) + 5, hidden_size=8, num_hidden_layers=0, num_attention_heads=1,
                     intermediate_size=8, max_position_embeddings=512, num_labels=3,
                     id2label={0: "O", 1: "B-PER", 2: "I-PER"}, label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    torch.manual_seed(0)
    model = BertForTokenClassification(cfg)
    with torch.no_grad():
        emb = model.bert.embeddings
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            table.weight.zero_()
        emb.LayerNorm.weight.fill_(1)
        emb.LayerNorm.bias.zero_()
        emb.word_embeddings.weight[:, 1] = 5.0  # direction 1: O
        for w in NAME_WORDS:
            i = tok.convert_tokens_to_ids(w)
            emb.word_embeddings.weight[i].zero_()
            emb.word_embeddings.weight[i, 0] = 5.0  # direction 0: a person
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[0, 1], model.classifier.weight[1, 0] = 10.0, 1.0  # a person at p ≈ 0.998
        model.classifier.bias[2] = -10.0
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"


def test_hf_backend_finds_names_the_rules_cannot(tiny_ner):
    from gptnl.ner import NameModel

    text = "Vandaag belde Hoekstra over de vergunning."
    assert names(text) == []
    found = NameModel(NerBackend(kind="hf", path=tiny_ner)).find(text)
    assert [(f.start, f.end, f.text) for f in found] == [(14, 22, "Hoekstra")]


def test_hf_backend_reads_long_texts_in_chunks_with_true_offsets(tiny_ner):
    from gptnl.ner import NameModel

    text = ("Vandaag belde de vergunning. " * 120) + "Geachte heer Jansen."
    found = NameModel(NerBackend(kind="hf", path=tiny_ner)).find(text)
    assert [text[f.start:f.end] for f in found] == ["Jansen"]


def test_hf_backend_keeps_only_person_labels_above_the_score(tiny_ner):
    from gptnl.ner import NameModel

    text = "Vandaag belde Hoekstra."
    assert NameModel(NerBackend(kind="hf", path=tiny_ner, labels=["LOC"])).find(text) == []
    assert NameModel(NerBackend(kind="hf", path=tiny_ner, min_score=0.9999)).find(text) == []


def test_ner_backend_is_named_by_path_in_the_recipe_and_runs_in_the_step(tmp_path, tiny_ner):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({"pii": {"ner": {"kind": "hf", "path": str(tiny_ner)}}}))
    recipe = load_recipe(recipe_file)
    assert recipe.pii.names and recipe.pii.ner.path == tiny_ner.resolve()
    step = PiiScrubber(recipe.pii.mode, recipe.pii.seed, names=recipe.pii.names, ner=recipe.pii.ner)
    doc = next(step.run([Document(text="Geachte heer Hoekstra,\n\nVandaag belde Jansen.", id="d", metadata={})]))
    assert doc.text == "Geachte heer <NAME>,\n\nVandaag belde <NAME>." and doc.metadata["pii"] == {"NAME": 2}
    with_ner = score_names(detector(True, recipe.pii.ner))
    assert with_ner.found >= score_names().found


def test_ner_is_off_by_default_and_a_missing_folder_is_one_clear_error(tmp_path):
    from gptnl.config import RecipeConfig
    from gptnl.ner import NameModel

    assert RecipeConfig().pii.ner is None and RecipeConfig().pii.names
    with pytest.raises(GptnlError, match="never downloaded"):
        NameModel(NerBackend(kind="hf", path=tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GptnlError, match="not a token-classification model folder"):
        NameModel(NerBackend(kind="hf", path=tmp_path / "empty"))


def test_spacy_backend_loads_a_pipeline_folder(tmp_path):
    spacy = pytest.importorskip("spacy")
    from gptnl.ner import NameModel

    nlp = spacy.blank("nl")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Hoekstra"},
                                                 {"label": "GPE", "pattern": "Utrecht"}])
    nlp.to_disk(tmp_path / "nl_pipeline")
    found = NameModel(NerBackend(kind="spacy", path=tmp_path / "nl_pipeline")).find("Hoekstra woont in Utrecht.")
    assert [f.text for f in found] == ["Hoekstra"]


def test_letters_file_is_the_shipped_one():
    assert LETTERS.is_file() and LETTERS.parent.name == "pii"
