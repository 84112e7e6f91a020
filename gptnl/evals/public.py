"""Public Dutch benchmarks read from their publishers' files as distributed (the Hugging Face repo's
JSONL/Parquet/CSV, the MBBQ repository's JSONL) and mapped onto our items, one small function per
schema. Prompts and choices follow lm-eval's task of the same set where it has one, so that numbers
can be set beside lm-eval's; docs/evals.md says how each compares with EuroEval's.

Every row is checked for the publisher's columns; a file in another layout is refused naming the
file, the row and the columns it lacks."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gptnl.evals.spec import TaskSpec
from gptnl.public_data import PublicDataError, describe, locate, match, rows

LETTERS = "ABCDE"
Mapper = Callable[[dict, str], dict]


def _need(row: dict, where: str, layout: str, *columns: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        article = "an" if layout[0] in "AEIOU" else "a"
        raise PublicDataError(f"{where}: not {article} {layout} row: missing column(s) {', '.join(missing)} "
                              f"(it has: {', '.join(sorted(map(str, row))) or 'none'})")


def _letter(value, where: str, n: int) -> int:
    text = str(value).strip().upper()
    if text not in LETTERS[:n]:
        raise PublicDataError(f"{where}: answer {value!r} is not one of {', '.join(LETTERS[:n])}")
    return LETTERS.index(text)


def _index(value, where: str, n: int, base: int = 0) -> int:
    try:
        i = int(str(value).strip()) - base
    except ValueError:
        i = -1
    if not 0 <= i < n:
        raise PublicDataError(f"{where}: answer {value!r} is not a choice number {base}..{n - 1 + base}")
    return i


def _okapi_text(text: str | None) -> str:
    """lm-eval's preprocess() for the Okapi sets: WikiHow's [title] marks and bracketed artefacts out."""
    if text is None:
        return " "
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def belebele(row: dict, where: str) -> dict:
    _need(row, where, "Belebele", "flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3",
          "mc_answer4", "correct_answer_num")
    options = [str(row[f"mc_answer{i}"]) for i in range(1, 5)]
    return {"passage": row["flores_passage"], "question": str(row["question"]).strip(),
            **dict(zip("abcd", options, strict=True)), "choices": list(LETTERS[:4]),
            "answer": _index(row["correct_answer_num"], where, 4, base=1)}


def _four_options(row: dict, where: str, layout: str, answer: int) -> dict:
    return {"question": str(row["question"]).strip(), **{f"option_{x}": str(row[f"option_{x}"]) for x in "abcd"},
            "choices": list(LETTERS[:4]), "answer": answer, "category": str(row.get("subject", ""))}


def global_mmlu(row: dict, where: str) -> dict:
    _need(row, where, "Global-MMLU", "question", "option_a", "option_b", "option_c", "option_d", "answer")
    return _four_options(row, where, "Global-MMLU", _letter(row["answer"], where, 4))


def include(row: dict, where: str) -> dict:
    _need(row, where, "INCLUDE", "question", "option_a", "option_b", "option_c", "option_d", "answer")
    return _four_options(row, where, "INCLUDE", _index(row["answer"], where, 4))


def okapi_arc(row: dict, where: str) -> dict:
    _need(row, where, "Okapi ARC", "instruction", "option_a", "option_b", "option_c", "option_d", "answer")
    options = [_okapi_text(row[f"option_{x}"]) for x in "abcde" if row.get(f"option_{x}")]
    return {"query": "Question: " + _okapi_text(row["instruction"]) + "\nAnswer:", "choices": options,
            "answer": _letter(row["answer"], where, len(options))}


def okapi_hellaswag(row: dict, where: str) -> dict:
    _need(row, where, "Okapi HellaSwag", "activity_label", "ctx_a", "ctx_b", "endings", "label")
    if not isinstance(row["endings"], list):
        raise PublicDataError(f"{where}: `endings` must be a list of strings")
    ctx = f"{row['ctx_a']} {str(row['ctx_b']).capitalize()}"
    endings = [_okapi_text(e) for e in row["endings"]]
    return {"query": _okapi_text(f"{row['activity_label']}: {ctx}"), "choices": endings,
            "answer": _index(row["label"], where, len(endings))}


def okapi_mmlu(row: dict, where: str) -> dict:
    _need(row, where, "Okapi MMLU", "instruction", "option_a", "option_b", "option_c", "option_d", "answer")
    return {"instruction": str(row["instruction"]).strip(), **{f"option_{x}": str(row[f"option_{x}"]) for x in "abcd"},
            "choices": list(LETTERS[:4]), "answer": _letter(row["answer"], where, 4)}


def okapi_truthfulqa_mc1(row: dict, where: str) -> dict:
    _need(row, where, "Okapi TruthfulQA", "question", "mc1_targets_choices", "mc1_targets_labels")
    choices, labels = row["mc1_targets_choices"], row["mc1_targets_labels"]
    if not isinstance(choices, list) or not isinstance(labels, list) or len(choices) != len(labels) \
            or list(labels).count(1) != 1:
        raise PublicDataError(f"{where}: mc1_targets_choices and mc1_targets_labels must be lists of one length "
                              "with exactly one label 1")
    return {"question": _okapi_text(row["question"]), "choices": [str(c) for c in choices],
            "answer": list(labels).index(1)}


def okapi_truthfulqa_mc2(row: dict, where: str) -> dict:
    """mc2: every true answer among the choices; scored as the probability mass on them (lm-eval's mc2)."""
    _need(row, where, "Okapi TruthfulQA", "question", "mc2_targets_choices", "mc2_targets_labels")
    choices, labels = row["mc2_targets_choices"], row["mc2_targets_labels"]
    if not isinstance(choices, list) or not isinstance(labels, list) or len(choices) != len(labels) \
            or 1 not in list(labels):
        raise PublicDataError(f"{where}: mc2_targets_choices and mc2_targets_labels must be lists of one length "
                              "with at least one label 1")
    return {"question": _okapi_text(row["question"]), "choices": [str(c) for c in choices],
            "answer": [i for i, label in enumerate(labels) if label == 1]}


def squad(row: dict, where: str) -> dict:
    """SQuAD v2: an unanswerable question has no answer texts; its target is the empty answer."""
    _need(row, where, "SQuAD", "context", "question", "answers")
    answers = row["answers"]
    texts = answers.get("text") if isinstance(answers, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise PublicDataError(f"{where}: `answers` must be {{\"text\": [...], \"answer_start\": [...]}}")
    return {"source_id": str(row.get("id", "")), "title": str(row.get("title", "")), "context": row["context"],
            "question": str(row["question"]).strip(), "answer": texts or [""]}


# lm-eval's COPA connectors, in Dutch: "want" and "dus" keep the main-clause word order of the choice
_COPA = {"cause": "want", "effect": "dus"}


def copa(row: dict, where: str) -> dict:
    _need(row, where, "COPA", "premise", "choice1", "choice2", "question", "label")
    if row["question"] not in _COPA:
        raise PublicDataError(f"{where}: question {row['question']!r} is not cause or effect")
    premise = str(row["premise"]).strip()
    premise = premise[:-1] if premise.endswith((".", "!", "?")) else premise
    lower = [str(c)[:1].lower() + str(c)[1:] for c in (row["choice1"], row["choice2"])]
    return {"premise": premise, "connector": _COPA[row["question"]], "choices": lower,
            "answer": _index(row["label"], where, 2)}


def _yes_no(ok: bool) -> dict:
    return {"answer": 0 if ok else 1}  # the choices are ["ja", "nee"]


def scala(row: dict, where: str) -> dict:
    _need(row, where, "ScaLA", "text", "label")
    if row["label"] not in ("correct", "incorrect"):
        raise PublicDataError(f"{where}: label {row['label']!r} is not correct or incorrect")
    return {"text": row["text"], **_yes_no(row["label"] == "correct")}


def dutch_cola(row: dict, where: str) -> dict:
    _need(row, where, "Dutch CoLA", "Sentence", "Acceptability")
    if str(row["Acceptability"]).strip() not in ("0", "1"):
        raise PublicDataError(f"{where}: Acceptability {row['Acceptability']!r} is not 0 or 1")
    return {"text": row["Sentence"], "source_id": str(row.get("Original ID", "")),
            **_yes_no(str(row["Acceptability"]).strip() == "1")}


_DBRD = {"1": True, "pos": True, "positive": True, "0": False, "neg": False, "negative": False}


def dbrd(row: dict, where: str) -> dict:
    """The Hub's DBRD (label 1 = pos, 0 = neg) and EuroEval's copy (label "positive"/"negative")."""
    _need(row, where, "DBRD", "text", "label")
    label = str(row["label"]).strip().lower()
    if label not in _DBRD:
        raise PublicDataError(f"{where}: label {row['label']!r} is not pos/neg (1/0)")
    return {"text": row["text"], "answer": 0 if _DBRD[label] else 1}  # the choices are ["positief", "negatief"]


def mbbq(row: dict, where: str) -> dict:
    """The MBBQ repository's rows, by BBQ's group-matching rules (gptnl/evals/mbbq.py)."""
    from gptnl.evals.mbbq import MbbqError, item

    try:
        return item(row, where)
    except MbbqError as exc:
        raise PublicDataError(str(exc)) from None


MAPPERS: dict[str, Mapper] = {
    "belebele": belebele, "global-mmlu": global_mmlu, "include": include, "mbbq": mbbq, "squad": squad,
    "copa": copa, "okapi-arc": okapi_arc, "okapi-hellaswag": okapi_hellaswag, "okapi-mmlu": okapi_mmlu,
    "okapi-truthfulqa-mc1": okapi_truthfulqa_mc1, "okapi-truthfulqa-mc2": okapi_truthfulqa_mc2, "scala": scala,
    "dutch-cola": dutch_cola, "dbrd": dbrd,
}


def split_files(spec: TaskSpec, split: str | None = None, folder: Path | None = None) -> list[Path]:
    """The files of a split: in `folder`, or in the set's folder on this machine (public_data.locate)."""
    pub = spec.public
    split = split or pub.split
    if folder is None:
        return locate(spec.name, pub.files, split)[1]
    hits = match(folder, pub.files[split])
    if not hits:
        raise PublicDataError(f"{spec.name}: no {describe(pub.files[split])} under {folder}")
    return hits


def read_split(spec: TaskSpec, split: str | None = None, folder: Path | None = None) -> tuple[list[dict], list[Path]]:
    """(items, the files read) of a split of a public set; ids are `<file>:<row>`, stable per file."""
    mapper = MAPPERS[spec.public.layout]
    files = split_files(spec, split, folder)
    items = []
    for path in files:
        for i, (where, row) in enumerate(rows(path)):
            item = mapper(row, where)
            if spec.public.layout == "mbbq":  # example_id and question_index restart in every category file
                item = {**item, "scenario": f"{path.stem}:{item['scenario']}"}
            items.append({**item, "id": f"{path.stem}:{i}"})
    if not items:
        raise PublicDataError(f"{spec.name}: no rows in {', '.join(map(str, files))}")
    return items, files
