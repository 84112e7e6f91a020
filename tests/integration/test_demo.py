"""The main job, as a user runs it: `gptnl demo --quick` (of the installed wheel, run from a folder
that is no checkout: the `wheel_demo` fixture, which the wheel test shares), then again to see it
reuse its outputs."""

import json
import re
import subprocess

import pytest
import yaml
from conftest import ROOT

from gptnl.demo import QUESTIONS
from gptnl.demo_report import SECTIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the first user builds the wheel and its venv


def test_demo_runs_end_to_end_and_reuses_outputs(wheel_demo):
    out, first = wheel_demo.out, wheel_demo.first
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("1/9 corpus", "2/9 tokenizer", "3/9 pack", "4/9 train", "5/9 export", "6/9 finetune",
                  "7/9 generate", "8/9 serve", "9/9 evaluate", "demo done"):
        assert stage in first.stdout
    continuations = [line for line in first.stdout.splitlines() if line.strip().startswith("•")]
    assert len(continuations) == 3
    answers = [line for line in first.stdout.splitlines() if line.strip().startswith("◦")]
    assert len(answers) == 4 and all("→" in a for a in answers)  # two from transformers, two through the gateway
    audit = [json.loads(line) for line in (out / "serving" / "audit.jsonl").read_text().splitlines()]
    assert [a["status"] for a in audit[:2]] == [200, 200] and all(a["status"] == 200 for a in audit)
    report = out / "evals" / "report" / "report.html"
    assert f"evaluation report: {report}" in first.stdout.replace("\n", "")
    records = [json.loads(line) for line in (out / "evals" / "results.jsonl").read_text().splitlines()]
    cell_records = records
    cells = 2 * len(yaml.safe_load((ROOT / "evals" / "suites" / "public-values.yaml").read_text())["tasks"])
    assert {r["model"]["name"] for r in records} == {"gptnl-tiny", "baseline"} and len(records) == cells
    html = report.read_text()
    for section in ("Leaderboard", "Public values", "Comparison", "Model profiles", "baseline vs gptnl-tiny"):
        assert section in html
    # plain language is scored against meaning: the tiny model's short nonsense does not win it
    plain = [r for r in records if r["task"]["name"] in ("begrijpelijke-taal", "vereenvoudiging")]
    assert plain and all(r["primary"] == "b1_share_faithful" for r in plain)
    md = (out / "evals" / "report" / "report.md").read_text()
    for task in ("begrijpelijke-taal", "vereenvoudiging"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {task} | b1_share_faithful |"))
        assert not row.rstrip(" |").endswith("gptnl-tiny"), row
    canary = next(r for r in records if r["task"]["name"] == "privacy-canaries" and r["model"]["name"] == "gptnl-tiny")
    assert canary["metrics"]["exposure"]["n"] == 8 and canary["metrics"]["exposure"]["value"] is not None

    # the one report: every section, and every link and image in it resolves inside the demo folder
    main = out / "report.html"
    assert f"report (data card, training curve, evaluation): {main}" in first.stdout.replace("\n", "")
    page = main.read_text()
    for section in SECTIONS:
        assert f">{section}</h2>" in page, section
    links = re.findall(r'(?:href|src)="([^"]+)"', page)
    for must in ("corpus/CARD.md", "train/loss.png", "train/metrics.jsonl", "evals/report/report.html",
                 "sft/model/README.md", "model/README.md", "serving/audit.jsonl"):
        assert must in links, must
    assert all((out / link).exists() for link in links), [link for link in links if not (out / link).exists()]
    assert "privacy-canaries" in page and (out / "report.md").read_text().startswith("# gptnl demo report")
    card = (out / "sft" / "model" / "README.md").read_text()
    assert "## Algoritmeregister" in card and "| privacy | privacy-canaries | exposure |" in card

    evals = json.loads((out / "sft" / "eval.json").read_text())
    assert evals["val_loss_after"] < evals["val_loss_before"]
    assert json.loads((out / "sft" / "data" / "report.json").read_text())["read"] >= 300
    assert (out / "train" / "loss.png").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((out / "model" / "manifest.json").read_text())["produced"]["step"] == 40
    # a two-source mixture: the Dutch corpus and the bundled English sample, each with its own curve
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    last = next(r for r in reversed(records) if "tokens_seen/en" in r)
    assert 0.15 < last["tokens_seen/en"] / (last["tokens_seen/en"] + last["tokens_seen/nl"]) < 0.25
    assert any("val_loss/en" in r for r in records) and any("val_loss/nl" in r for r in records)
    md_main = (out / "report.md").read_text()
    assert re.search(r"^\| en \| 0\.2 \| [\d,]+ \| \d+ \| \d+\.\d{3} \|$", md_main, re.M), md_main

    second = subprocess.run(wheel_demo.cmd, capture_output=True, text=True, env=wheel_demo.env, cwd=wheel_demo.cwd,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "279 documents read, 235 kept, 44 refused" in first.stdout
    assert (out / "corpus" / "CARD.md").is_file()
    assert second.stdout.count("reusing") == 8
    # every answer and cell is recorded for these weights: no server is started, nothing is asked again
    assert "every answer and cell is recorded for these weights" in second.stdout
    assert len((out / "serving" / "audit.jsonl").read_text().splitlines()) == len(audit)
    assert [json.loads(line)["cell"] for line in (out / "evals" / "results.jsonl").read_text().splitlines()] == \
        [r["cell"] for r in cell_records]
    recorded = json.loads((out / "serving" / "answers.json").read_text())
    assert [q for q, _ in recorded["answers"]] == list(QUESTIONS)
    assert set(recorded["models"]) == {"gptnl-tiny", "baseline"}
    assert all(f"| {q} |" in (out / "report.md").read_text() for q in QUESTIONS)  # reported again, from the record
    assert "torchrun" not in second.stdout  # training was not started again
    # everything it started, it stopped: no vLLM, gateway or trainer still runs from the demo's folder
    assert subprocess.run(["pgrep", "-f", str(out)], capture_output=True).returncode == 1
