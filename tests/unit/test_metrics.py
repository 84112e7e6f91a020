"""Each metric against the library that defines it (scikit-learn, sacrebleu, torchmetrics' SQuAD,
the published SARI examples, lm-eval's rolling windows), and the registries the task spec reads."""

from __future__ import annotations

import json
import random

import pytest
import sacrebleu
from sklearn.metrics import f1_score, matthews_corrcoef

from gptnl.evals import fewshot, squad
from gptnl.evals.metrics import METRICS, bootstrap, metric
from gptnl.evals.runner import TASK_TYPES, rolling_windows
from gptnl.evals.sari import sari
from gptnl.evals.scorers import SCORERS, chrf_stats
from gptnl.evals.spec import TaskSpec
from gptnl.evals.tasks import EvalError, load_task

HYPS = ["De kat zit op de mat.", "Het regent vandaag in Utrecht.", "U moet de aanvraag voor 1 mei doen.",
        "Bel de gemeente.", ""]
REFS = ["De kat zat op de mat.", "Vandaag regent het hard in Utrecht.", "Doe de aanvraag voor 1 mei.",
        "U kunt de gemeente bellen.", "Niets."]


def value(name: str, rows: list[dict]) -> float:
    return METRICS[name].fn(rows, {})


def test_mcc_and_macro_f1_equal_scikit_learn():
    rng = random.Random(3)
    gold = [rng.randrange(3) for _ in range(200)]
    pred = [g if rng.random() < 0.6 else rng.randrange(3) for g in gold]
    rows = [{"id": str(i), "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, pred, strict=True))]
    assert value("mcc", rows) == pytest.approx(matthews_corrcoef(gold, pred), abs=1e-12)
    assert value("macro_f1", rows) == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)
    accuracy = value("accuracy", [{"correct": g == p} for g, p in zip(gold, pred, strict=True)])
    assert value("mcc", rows) != pytest.approx(accuracy)
    m = bootstrap(rows, "mcc", {}, resamples=50)
    assert m["low"] <= m["value"] <= m["high"] and m["n"] == 200


def test_chrf_and_chrf_pp_equal_sacrebleu_corpus_scores():
    rows = [{"id": str(i), **chrf_stats(h, [r])} for i, (h, r) in enumerate(zip(HYPS, REFS, strict=True))]
    assert value("chrf", rows) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert value("chrf_pp", rows) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score, abs=1e-9)
    assert rows[0]["chrf_sentence"] == pytest.approx(sacrebleu.sentence_chrf(HYPS[0], [REFS[0]]).score)
    several = chrf_stats(HYPS[1], [REFS[0], REFS[1]])  # several references: the best one counts, as in sacrebleu
    assert METRICS["chrf"].fn([several], {}) == pytest.approx(
        sacrebleu.corpus_chrf([HYPS[1]], [[REFS[0]], [REFS[1]]]).score)


@pytest.mark.parametrize("pred, golds", [
    ("de kat", ["De kat!"]), ("The answer is Utrecht", ["Utrecht", "in Utrecht"]), ("in het midden", ["midden"]),
    ("1976", ["in 1976", "1976"]), ("nee", ["ja"]), ("a the an", ["the"]), ("Den  Haag.", ["den haag"]),
])
def test_squad_exact_match_and_f1_equal_torchmetrics(pred, golds):
    from torchmetrics.functional.text import squad as reference

    expected = reference([{"prediction_text": pred, "id": "q"}],
                         [{"answers": {"answer_start": [0] * len(golds), "text": golds}, "id": "q"}])
    em, f1 = squad.best(pred, golds)
    assert 100 * em == pytest.approx(float(expected["exact_match"]))
    assert 100 * f1 == pytest.approx(float(expected["f1"]), abs=1e-4)


def test_squad_v2_unanswerable_is_right_only_when_left_empty():
    assert squad.best("", []) == (1.0, 1.0) and squad.best("Utrecht", []) == (0.0, 0.0)


def test_sari_matches_the_published_examples():
    """The examples of the `evaluate` SARI card (Xu et al.'s sentence, three references)."""
    refs = ["About 95 species are currently known .", "About 95 species are now accepted .",
            "95 species are now accepted ."]
    assert sari("About 95 species are currently accepted .", "About 95 you now get in .", refs) == pytest.approx(
        26.953601953601954, abs=1e-9)
    same = "About 95 species are currently accepted ."
    assert sari(same, same, [same]) == pytest.approx(100.0)
    # the card's un-tokenised spelling gives the same: sentences are 13a-tokenised first
    assert sari("About 95 species are currently accepted.", "About 95 you now get in.",
                [r.replace(" .", ".") for r in refs]) == pytest.approx(26.953601953601954, abs=1e-9)
    with pytest.raises(ValueError, match="at least one reference"):
        sari("a", "b", [])


@pytest.mark.parametrize("n, window, stride", [(1, 8, 7), (7, 8, 7), (8, 8, 7), (50, 8, 7), (50, 8, 3), (23, 5, 1)])
def test_rolling_windows_are_lm_evals(n, window, stride):
    """window = tokens per request (context + scored); lm-eval's max_length is window - 1."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = list(range(100, 100 + n))
    ours = rolling_windows(tokens, 1, window, stride)
    theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(
        tokens, prefix_token=1, max_seq_len=window - 1, context_len=window - stride)]
    assert [(list(c), list(x)) for c, x in theirs] == ours
    assert [t for _, x in ours for t in x] == tokens and all(len(c) + len(x) <= window for c, x in ours)


def test_every_metric_declares_its_direction_and_names_are_registered_once():
    assert {"mcc", "macro_f1", "squad_em", "squad_f1", "sari", "chrf", "truthfulqa_mc2"} <= set(METRICS)
    assert METRICS["perplexity"].higher_is_better is False and METRICS["bias_ambig"].higher_is_better is None
    assert all(isinstance(m.higher_is_better, bool | None) for m in METRICS.values())
    with pytest.raises(ValueError, match="registered twice"):
        metric("accuracy", higher_is_better=True)(lambda rows, ctx: 0.0)


def _spec(**fields) -> dict:
    return {"name": "t", "value": "kennis", "description": "x", "type": "generate", "metrics": ["exact_match"],
            "primary": "exact_match", **fields}


def test_the_spec_allows_exactly_what_is_registered():
    assert TaskSpec.model_validate(_spec(scorer="squad", metrics=["squad_em"], primary="squad_em"))
    for field, bad, kind in [("type", "multiple_choise", "type"), ("scorer", "sqaud", "scorer")]:
        with pytest.raises(ValueError, match=f"{kind}: unknown '{bad}' \\(known: .*"):
            TaskSpec.model_validate(_spec(**{field: bad}))
    with pytest.raises(ValueError, match="metric: unknown 'acuracy'"):
        TaskSpec.model_validate(_spec(metrics=["acuracy"], primary="acuracy"))
    assert {"multiple_choice", "perplexity", "generate", "probe", "pairs", "canary"} <= set(TASK_TYPES)
    assert {"exact", "squad", "chrf", "simplification", "readability"} <= set(SCORERS)
    assert TaskSpec.model_validate(_spec(few_shot=3)).few_shot.n == 3
    with pytest.raises(ValueError, match="few_shot.split 'train' is not among the task's splits"):
        TaskSpec.model_validate(_spec(few_shot={"n": 2, "split": "train"}))


def test_few_shot_from_the_train_split_is_the_same_for_every_item_and_fixed_by_the_seed(tmp_path):
    task = tmp_path / "t"
    task.mkdir()
    rows = lambda prefix, n: "".join(json.dumps({"id": f"{prefix}{i}", "question": f"{prefix} {i}?",  # noqa: E731
                                                 "choices": ["ja", "nee"], "answer": i % 2}) + "\n" for i in range(n))
    (task / "items.jsonl").write_text(rows("test", 5))
    (task / "train.jsonl").write_text(rows("train", 30))
    spec = ("name: t\nvalue: kennis\ndescription: x\ntype: multiple_choice\nprompt: '{question}'\nchoices: choices\n"
            "splits: {train: train.jsonl}\nmetrics: [accuracy]\nprimary: accuracy\n")
    (task / "task.yaml").write_text(spec + "few_shot: {n: 3, split: train, seed: 4}\n")
    t = load_task(task)
    first = [fewshot.prefix(t, item, 3) for item in t.items]
    assert len(set(first)) == 1 and first[0].count("train") == 3 and "test" not in first[0]
    assert first[0].endswith(("ja\n\n", "nee\n\n"))
    assert fewshot.prefix(load_task(task), t.items[0], 3) == first[0]
    (task / "task.yaml").write_text(spec + "few_shot: {n: 3, split: train, seed: 5}\n")
    assert fewshot.prefix(load_task(task), t.items[0], 3) != first[0]


def test_short_nonsense_reads_as_b1_but_does_not_win_the_plain_language_headline():
    """The headline of both plain-language tasks counts B1 only where the meaning of the reference
    is kept; SARI alone rewards deleting, so it cannot be the headline."""
    for name in ("vereenvoudiging", "begrijpelijke-taal"):
        task = load_task(name)
        assert task.spec.primary == "b1_share_faithful"
        scored = [i for i in task.items if i.get("reference") or name == "vereenvoudiging"][:20]
        score = SCORERS[task.spec.scorer]
        nonsense = [{"id": i["id"], **score(task.spec, i, "Het is zo. De kat is hier. Dat kan.")} for i in scored]
        good = [{"id": i["id"], **score(task.spec, i, i["answer"][0] if name == "vereenvoudiging" else i["reference"])}
                for i in scored]
        assert value("b1_share", nonsense) == 1.0 and value("b1_share_faithful", nonsense) == 0.0
        assert value("b1_share_faithful", good) > 0.6
    vv = load_task("vereenvoudiging")
    copied = [SCORERS["simplification"](vv.spec, i, i["source"]) for i in vv.items]
    short = [SCORERS["simplification"](vv.spec, i, "Dat kan. Bel ons.") for i in vv.items]
    assert value("sari", short) > value("sari", copied)  # why SARI is shown beside the headline, not as it


def test_a_simplification_item_without_its_source_is_refused_at_load(tmp_path):
    task = tmp_path / "t"
    task.mkdir()
    (task / "task.yaml").write_text("name: t\nvalue: begrijpelijke-taal\ndescription: x\ntype: generate\n"
                                    "prompt: '{text}'\nscorer: simplification\nmetrics: [sari]\nprimary: sari\n")
    (task / "items.jsonl").write_text(json.dumps({"id": "a", "answer": ["Kort."], "text": "Lang."}) + "\n")
    with pytest.raises(EvalError, match="items.jsonl:1: scorer simplification needs the sentence to rewrite"):
        load_task(task)
