"""`gptnl data takedown` reaches the models: every run, export and tuned model whose manifests trace
back to the corpus is named in the takedown report, and the model folders' cards say which
takedowns came after their training. A real corpus, shards, two-step training run and export; the
tuned model and the run still in progress are folders with the manifest (and run config) those
stages write, since a fine-tuning run here would cost minutes and add nothing to the tracing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, SAMPLE, run_trainer, write_train_config

from gptnl.artefacts import SftInputs, SftManifest, SftOutputs, write_manifest
from gptnl.config import load_recipe
from gptnl.data_pipeline.build import build
from gptnl.data_pipeline.descendants import descendants
from gptnl.fileio import sha256_file
from gptnl.pack import pack
from gptnl.train.export import export_run


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, sample_tokenizer, tiny_base):
    """corpus → shards → run → export → tuned model, under `runs/`; an unrelated model beside them."""
    root = tmp_path_factory.mktemp("takedown")
    shutil.copy(ROOT / "data_pipeline" / "licences.yaml", root / "licences.yaml")
    (root / "sources.yaml").write_text(yaml.safe_dump({"sources": [
        {"name": "gptnl-sample", "path": str(SAMPLE / "*.jsonl"), "licence": "CC0-1.0", "publisher": "gptnl team",
         "url": "https://gptnl.example/sample", "retrieved": "2026-11-28"}]}))
    (root / "blocklist.txt").write_text("# test blocklist\n")
    recipe = root / "recipe.yaml"
    recipe.write_text("sources: sources.yaml\nlicences: licences.yaml\nblocklist: blocklist.txt\n"
                      "near_dedup: {enabled: false}\ndecontamination: {tasks: null}\n")
    data = root / "data"
    build(recipe, load_recipe(recipe), data / "corpus")
    pack(data / "corpus", sample_tokenizer, 64, data / "shards", val_fraction=0.1)

    runs = root / "runs"
    config = write_train_config(root / "train.yaml", data / "shards", max_steps=2, zero_stage=0,
                                eval={"every": 0, "batches": 1}, checkpoint={"every": 0, "keep_last": 1})
    proc = run_trainer(config, runs / "pretrain", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = export_run(runs / "pretrain", runs / "pretrain" / "export")
    tuned = runs / "sft" / "model"
    tuned.mkdir(parents=True)
    write_manifest(tuned, SftManifest(consumed=SftInputs(base=str(export), data={}),
                                      produced=SftOutputs(method="lora", steps=1, weights={}), config={}))
    (tuned / "README.md").write_text("# tuned\n")
    running = runs / "second-run"
    running.mkdir()
    shutil.copy(runs / "pretrain" / "train_config.json", running / "train_config.json")
    shutil.copytree(tiny_base, runs / "unrelated")
    (runs / "unrelated" / "README.md").write_text("# a model of another corpus\n")
    return {"corpus": data / "corpus", "shards": data / "shards", "runs": runs, "export": export, "tuned": tuned,
            "running": running, "unrelated": runs / "unrelated"}


def takedown_cli(corpus, ids, *extra):
    return subprocess.run([sys.executable, "-m", "gptnl", "data", "takedown", str(corpus), "--ids", str(ids), *extra],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})


def test_descendants_follow_the_manifests(lineage):
    found = {d.path: d for d in descendants(lineage["corpus"], [lineage["runs"]])}
    want = {lineage[k].resolve() for k in ("shards", "export", "tuned", "running")} | {
        (lineage["runs"] / "pretrain").resolve()}
    assert set(found) == {str(p) for p in want}
    assert found[str(lineage["tuned"].resolve())].from_ == str(lineage["export"].resolve())
    assert not found[str(lineage["running"].resolve())].finished
    assert descendants(lineage["corpus"], []) == [found[str(lineage["shards"].resolve())]]  # beside the corpus only


def test_takedown_names_the_models_and_marks_their_cards(lineage, tmp_path):
    unrelated_card = (lineage["unrelated"] / "README.md").read_text()
    ids = tmp_path / "ids.txt"
    ids.write_text("gptnl-sample-faq-0001\n")
    proc = takedown_cli(lineage["corpus"], ids, "--runs", str(lineage["runs"]))
    assert proc.returncode == 0, proc.stderr
    assert "1 document(s) removed" in proc.stdout
    assert "trained on this corpus (export, trained 20" in proc.stdout and "still training" in proc.stdout
    report_path = proc.stdout.split("takedown report: ")[1].split()[0]
    report = json.loads(open(report_path).read())
    trained = {d["path"]: d["stage"] for d in report["trained"]}
    assert trained == {str((lineage["runs"] / "pretrain").resolve()): "train",
                       str(lineage["export"].resolve()): "export", str(lineage["tuned"].resolve()): "finetune",
                       str(lineage["running"].resolve()): "train"}
    assert report["removed"] == 1 and report["entries"] == ["gptnl-sample-faq-0001"]
    assert [d["path"] for d in report["shards"]] == [str(lineage["shards"].resolve())] and report["rebuild"]

    for model in (lineage["export"], lineage["tuned"]):
        card = (model / "README.md").read_text()
        assert "## Known takedowns since training" in card and "`gptnl-sample-faq-0001`" in card
        assert report["time"] in card and report_path in card
    assert (lineage["export"] / "README.md").read_text().startswith("---")  # the card itself is kept
    assert (lineage["unrelated"] / "README.md").read_text() == unrelated_card
    croissant = json.loads((lineage["corpus"] / "croissant.json").read_text())  # rewritten with the documents
    assert {f["contentUrl"]: f["sha256"] for f in croissant["distribution"] if f["@type"] == "cr:FileObject"} == {
        str(p.relative_to(lineage["corpus"])): sha256_file(p)
        for p in [*sorted((lineage["corpus"] / "documents").glob("*.jsonl.gz")), lineage["corpus"] / "ledger.jsonl.gz"]}

    ids.write_text("gptnl-sample-faq-0002\n")
    proc = takedown_cli(lineage["corpus"], ids, "--runs", str(lineage["runs"]))
    assert proc.returncode == 0, proc.stderr
    card = (lineage["export"] / "README.md").read_text()
    assert card.count("## Known takedowns since training") == 1
    assert "`gptnl-sample-faq-0001`" in card and "`gptnl-sample-faq-0002`" in card

    from gptnl.modelcard import write_model_card  # what `gptnl card` runs: a rewritten card keeps the section

    rewritten = write_model_card(lineage["export"]).read_text()
    assert rewritten.count("## Known takedowns since training") == 1 and "`gptnl-sample-faq-0002`" in rewritten


def test_a_missing_runs_folder_is_one_clear_error(lineage, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("gptnl-sample-faq-0009\n")
    proc = takedown_cli(lineage["corpus"], ids, "--runs", str(tmp_path / "absent"))
    assert proc.returncode != 0 and "--runs" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
