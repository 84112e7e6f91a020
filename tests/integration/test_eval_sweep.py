"""Sweeps on a real local Ray, the results schema, the report in headless Chromium, and the suite
against the real served tiny model (vLLM on CPU behind the gateway)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from scripted_server import ScriptedServer

from gptnl.evals import results as res

TASKS = ["kennis", "taalvaardigheid", "stereotypen"]


def gptnl(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptnl", *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def slow_server():
    """Every log-likelihood request takes a while, so a cell is still running when its worker is killed."""
    def logprob(prompt: str) -> float:
        time.sleep(0.04)
        return -1.0 - (len(prompt) % 7) / 10

    with ScriptedServer(logprob=logprob) as s:
        yield s


@pytest.fixture(scope="module")
def swept(tmp_path_factory, slow_server):
    """A sweep of 2 models x 3 tasks x 1 setting on a local Ray, with one worker killed mid-cell."""
    work = tmp_path_factory.mktemp("sweep")
    (work / "suite.yaml").write_text(yaml.safe_dump({"name": "klein", "tasks": TASKS,
                                                     "tasks_dir": str(ROOT / "evals" / "tasks")}))
    (work / "sweep.yaml").write_text(yaml.safe_dump({
        "suite": "suite.yaml", "settings": [{"name": "kort", "limit": 12}], "concurrency": 2,
        "models": {"alfa": {"endpoint": slow_server.url}, "beta": {"endpoint": slow_server.url + "#scripted"}}}))
    results = work / "results"
    sweep = subprocess.Popen([sys.executable, "-m", "gptnl", "eval", "sweep", str(work / "sweep.yaml"), "--results",
                              str(results)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and sweep.poll() is None and time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "^ray::run_one"], capture_output=True, text=True).stdout.split()
        if found:
            killed = int(found[0])
            subprocess.run(["kill", "-9", str(killed)])
        time.sleep(0.05)
    out, err = sweep.communicate(timeout=900)
    return work, results, killed, sweep.returncode, out, err


def test_sweep_survives_a_killed_worker_and_a_rerun_skips_every_cell(swept, slow_server):
    work, results, killed, rc, out, err = swept
    assert killed is not None, "no Ray worker was running a cell"
    assert rc == 0, err[-3000:]
    records = res.read(results / "results.jsonl")
    cells = {r["cell"] for r in records}
    assert len(cells) == 6 and {(r["model"]["name"], r["task"]["name"]) for r in records} == {
        (m, t) for m in ("alfa", "beta") for t in TASKS}
    before = slow_server.requests
    again = gptnl("eval", "sweep", str(work / "sweep.yaml"), "--results", str(results))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 of 6 cells already in" in again.stderr
    assert slow_server.requests - before <= 2  # the two /v1/models lookups, no scoring
    assert len(res.read(results / "results.jsonl")) == len(records)


def test_records_follow_the_documented_schema(swept):
    _, results, *_ = swept
    documented = json.loads((ROOT / "docs" / "evals-result.schema.json").read_text())
    assert documented == res.json_schema(), "docs/evals-result.schema.json is stale: regenerate it"
    for line in (results / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        res.ResultRecord.model_validate(record)
        assert set(record) == set(documented["properties"])
        for m in record["metrics"].values():
            assert m["n"] > 0 and (m["low"] is None or m["low"] <= m["value"] <= m["high"])
        assert record["settings"]["limit"] == 12 and len(record["task"]["sha256"]) == 64


BROKEN_TASK = ("name: breekbaar\nvalue: kennis\ndescription: x\ntype: multiple_choice\nprompt: 'BREEK {question}'\n"
               "choices: choices\nmetrics: [accuracy]\nprimary: accuracy\n")


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """A sweep on a local Ray of one model x three tasks: `kennis` runs, `breekbaar` gets HTTP 500 from
    the endpoint on every try, `ontbrekend` has no items file. Then both are mended and it runs again."""
    work = tmp_path_factory.mktemp("failing")
    tasks = work / "tasks"
    shutil.copytree(ROOT / "evals" / "tasks" / "kennis", tasks / "kennis")
    (tasks / "breekbaar").mkdir()
    (tasks / "breekbaar" / "task.yaml").write_text(BROKEN_TASK)
    (tasks / "breekbaar" / "items.jsonl").write_text(json.dumps({"id": "b1", "question": "Ja?",
                                                                 "choices": ["ja", "nee"], "answer": 0}) + "\n")
    (tasks / "ontbrekend").mkdir()
    (tasks / "ontbrekend" / "task.yaml").write_text(BROKEN_TASK.replace("breekbaar", "ontbrekend"))
    (work / "suite.yaml").write_text(yaml.safe_dump({"name": "drie", "tasks": ["kennis", "breekbaar", "ontbrekend"],
                                                    "tasks_dir": str(tasks)}))
    broken, asked = [True], []

    def logprob(prompt: str) -> float:
        asked.append(prompt)
        if broken[0] and prompt.startswith("BREEK"):
            raise RuntimeError("the model fell over")
        return -1.0

    with ScriptedServer(logprob=logprob) as server:
        (work / "sweep.yaml").write_text(yaml.safe_dump({
            "suite": "suite.yaml", "settings": [{"name": "kort", "limit": 3}],
            "models": {"alfa": {"endpoint": server.url, "model_id": "scripted"}}}))
        args = ("eval", "sweep", str(work / "sweep.yaml"), "--results", str(work / "results"))
        first = gptnl(*args, env={**os.environ, "COLUMNS": "250"})
        report = gptnl("eval", "report", str(work / "results"), "--out", str(work / "report-1"))
        assert report.returncode == 0, report.stderr
        broken[0] = False
        shutil.copy(tasks / "breekbaar" / "items.jsonl", tasks / "ontbrekend" / "items.jsonl")
        asked.clear()
        second = gptnl(*args, env={**os.environ, "COLUMNS": "250"})
        yield work, first, second, list(asked)


def test_a_failing_cell_is_recorded_the_others_finish_and_a_rerun_retries_only_it(failing_sweep):
    work, first, second, asked_again = failing_sweep
    assert first.returncode == 2, first.stderr[-3000:]  # the CLI's exit code for a user-facing error
    assert "2 of 3 cells failed" in first.stderr and "failed cells" in first.stderr
    assert "HTTP 500" in first.stderr and "items file" in first.stderr and "Traceback" not in first.stderr
    failed = [json.loads(line) for line in (work / "results" / "failed.jsonl").read_text().splitlines()]
    assert sorted(f["task"] for f in failed) == ["breekbaar", "ontbrekend"] and all(f["error"] for f in failed)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 of 3 cells already in" in second.stderr
    assert asked_again and all(p.startswith("BREEK") for p in asked_again)  # kennis was not asked again
    records = res.read(work / "results" / "results.jsonl")
    assert sorted(r["task"]["name"] for r in records) == ["breekbaar", "kennis", "ontbrekend"]
    assert res.failures(work / "results") == []  # every failure has been made good since
    html = (work / "report-1" / "report.html").read_text()
    failed_table = re.search(r'<table id="failed-table">(.*?)</table>', html, re.S).group(1)
    assert failed_table.count("<tr class=\"failed\">") == 2 and "HTTP 500" in failed_table
    assert "## Failed cells" in (work / "report-1" / "report.md").read_text()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, installed the first time (as the Slurm script installs Slurm)."""
    found = shutil.which("chromium")
    if not found:
        res_ = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], capture_output=True,
                              text=True, timeout=900)
        if res_.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
            res_ = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                                  capture_output=True, text=True, timeout=900)
        assert res_.returncode == 0, res_.stderr[-2000:]
        found = shutil.which("chromium")
    return found


def test_report_opens_in_headless_chromium_with_table_and_every_chart(swept, chromium, tmp_path):
    """In a narrow window: the leaderboard, a published score beside ours (from the user's CSV),
    every chart loaded; wide tables scroll in their own box, so the page itself is no wider than
    the window; each chart panel is drawn at least 400 px wide, at most three in a row."""
    from PIL import Image

    _, results, *_ = swept
    refs = tmp_path / "refs.csv"
    refs.write_text("model,task,metric,value,source\nGPT-NL 7B,kennis,accuracy,0.61,https://example.org/p Table 3\n")
    res_ = gptnl("eval", "report", str(results), "--out", str(tmp_path / "report"), "--references", str(refs))
    assert res_.returncode == 0, res_.stderr
    html = tmp_path / "report" / "report.html"
    assert res_.stdout.strip() == str(html)
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--window-size=480,900", "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    charts = sorted(p.name for p in (tmp_path / "report" / "charts").glob("*.png"))
    assert charts == ["gelijke-behandeling.png", "kennis.png", "taalvaardigheid.png"]
    assert f'data-charts-loaded="{len(charts)}/{len(charts)}"' in dom, dom[-2000:]
    page, window = map(int, re.search(r'data-page-width="(\d+)/(\d+)"', dom).groups())
    assert page <= window, (page, window)
    table = re.search(r'<table class="leaderboard" id="leaderboard-klein">(.*?)</table>', dom, re.S).group(1)
    assert "<td>alfa</td>" in table and "<td>beta</td>" in table and table.count("<tr>") == 3
    reference = re.search(r'<table id="references-table">(.*?)</table>', dom, re.S).group(1)
    assert "GPT-NL 7B" in reference and "0.610" in reference and "Table 3" in reference
    assert "alfa vs beta" in dom
    with Image.open(tmp_path / "report" / "charts" / "gelijke-behandeling.png") as png:  # 4 metrics: 3 + 1 panels
        assert png.width >= 3 * 400 and png.height >= 2 * 300
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Leaderboard" in md and "| alfa |" in md and "charts/kennis.png" in md and "GPT-NL 7B" in md
    bad = tmp_path / "bad.csv"
    bad.write_text("model,task,metric,value,source\nx,kennis,accuracy,hoog,y\n")
    refused = gptnl("eval", "report", str(results), "--out", str(tmp_path / "r2"), "--references", str(bad))
    assert refused.returncode == 2 and "bad.csv:2: value 'hoog' is not a number" in refused.stderr


def test_suite_against_the_real_served_tiny_model(tiny_base, tmp_path):
    """`gptnl eval run --model tiny=PATH`: the export is served through the gateway and vLLM on CPU
    for the run, the whole suite is asked (3 items a task); and a minimal pair's log-likelihood
    margin as the evaluation read it from vLLM equals the one `transformers` computes."""
    import gzip

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = gptnl("eval", "run", "--model", f"tiny={tiny_base}", "--limit", "3", "--results", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    records = res.read(tmp_path / "results.jsonl")
    suite = yaml.safe_load((ROOT / "evals" / "suites" / "public-values.yaml").read_text())
    assert sorted(r["task"]["name"] for r in records) == sorted(suite["tasks"])
    for r in records:
        assert r["model"]["endpoint"] == f"local:{tiny_base}" and len(r["model"]["fingerprint"]) == 16
        primary = r["metrics"][r["primary"]]
        assert r["timings"]["requests"] > 0 and primary["value"] is not None and primary["n"] >= 3, r
    assert (tmp_path / "serving" / "audit.jsonl").is_file()  # asked through the gateway
    assert subprocess.run(["pgrep", "-f", str(tiny_base)], capture_output=True).returncode == 1  # vLLM stopped
    pairs = next(r for r in records if r["task"]["name"] == "taalvaardigheid")
    row = json.loads(gzip.open(tmp_path / "rows" / f"{pairs['cell']}.jsonl.gz").readline())
    item = json.loads((ROOT / "evals" / "tasks" / "taalvaardigheid" / "items.jsonl").read_text().splitlines()[0])
    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, torch_dtype=torch.float32)

    def loglik(text: str) -> float:
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        return sum(logp[i - 1, ids[0, i]].item() for i in range(1, ids.shape[1]))

    assert row["id"] == item["id"]
    assert row["margin"] == pytest.approx(loglik(item["good"]) - loglik(item["bad"]), abs=2e-3)
    # the model card picks up the records of exactly these weights (a copy of the folder is the same weights)
    copy = shutil.copytree(tiny_base, tmp_path / "copy")
    card = gptnl("card", str(copy), "--evals", str(tmp_path))
    assert card.returncode == 0, card.stderr
    text = (copy / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert {r["dataset"]["type"] for r in front["model-index"][0]["results"]} <= {f"gptnl/{t}" for t in suite["tasks"]}
    assert "| taalvaardigheid | taalvaardigheid | accuracy |" in text and "Not evaluated yet" not in text
    other = gptnl("card", str(copy), "--evals", str(tmp_path / "nowhere"))
    assert other.returncode == 2 and "no results.jsonl there" in other.stderr


def test_canary_exposure_finds_what_a_model_memorised(sample_tokenizer, tmp_path):
    """A tiny Llama trained until it memorises the twelve canary documents of the sample corpus (and
    their canary sentences alone),
    exported and served through the gateway and vLLM on CPU: its planted secrets rank near the top
    of their 100 candidates and greedy decoding writes most of them out, while the controls (the same
    shape, never trained on) stay at chance. The memorising run is plain torch on one process: what
    is under test is the measurement, not the trainer."""
    import torch

    from gptnl import tokenizer as tokenizer_mod
    from gptnl.config import ModelConfig
    from gptnl.hf import save_pretrained
    from gptnl.model import Llama

    tok = tokenizer_mod.load(sample_tokenizer)
    docs = [json.loads(line)["text"] for line in (ROOT / "data_pipeline/sample/canaries.jsonl").open()]
    # the canary sentences on their own too, as at the start of a document: a 2-layer model recalls
    # a secret from its prefix alone only when it has seen it there
    docs += [re.search(r"[^.]*\d{6}\.", d).group().strip() for d in docs]
    ids = [[tok.id("<s>"), *tok.tokenizer.encode(d).ids] for d in docs]
    x = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    mask = torch.zeros_like(x, dtype=torch.bool)
    for i, row in enumerate(ids):
        x[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), True
    torch.manual_seed(0)
    cfg = ModelConfig(name="tiny", vocab_size=2048, dim=128, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=352,
                      max_seq_len=1024)
    model = Llama(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none")
        loss = (loss * mask[:, 1:].flatten()).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    path = save_pretrained(model.state_dict(), cfg, sample_tokenizer, tmp_path / "memorised")

    run = gptnl("eval", "run", "--model", f"mem={path}", "--task", "privacy-canaries", "--results",
                str(tmp_path / "evals"))
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = res.read(tmp_path / "evals" / "results.jsonl")
    m = {k: v["value"] for k, v in record["metrics"].items()}
    assert record["metrics"]["exposure"]["n"] == 24 and m["exposure"] > 5.5, m  # log2(100) = 6.64 at most
    assert m["exposure_control"] < 3 and m["canary_extraction_rate"] >= 0.5, m


def test_a_sweep_on_a_ray_cluster_serves_local_exports_to_every_node(tiny_base, tmp_path):
    """`gptnl eval sweep --address`: a Ray cluster started with `ray start --head` (as the Slurm
    template starts it), a local export served for the run. The gateway listens on every interface
    and the cells ask it at this node's address, not 127.0.0.1, which a worker on another node could
    not reach. One machine stands in for the cluster: a second node cannot exist here, so what is
    shown is that the cells use the advertised address and get answers through it."""
    from gptnl.serving.replicas import free_port

    port = free_port()
    token = tmp_path / "ray-token"  # as the Slurm template joins its nodes: token authentication
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    ray = str(Path(sys.executable).parent / "ray")  # the environment's own Ray command
    head = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                           "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=180,
                          cwd=tmp_path)
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"name": "een", "tasks": ["taalvaardigheid"],
                                                            "tasks_dir": str(ROOT / "evals" / "tasks")}))
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
            "suite": "suite.yaml", "settings": [{"name": "kort", "limit": 3}],
            "models": {"tiny": {"path": str(tiny_base)}}}))
        run = gptnl("eval", "sweep", str(tmp_path / "sweep.yaml"), "--results", str(tmp_path / "results"),
                    "--address", f"127.0.0.1:{port}", env={**env, "COLUMNS": "200"})
        assert run.returncode == 0, run.stderr[-3000:]
        served_at = re.search(r"serving tiny at http://([\d.]+):(\d+)/v1", run.stdout + run.stderr)
        assert served_at and served_at.group(1) != "127.0.0.1", run.stdout[-2000:]
        assert yaml.safe_load((tmp_path / "results" / "serving" / "gateway.yaml").read_text())["host"] == "0.0.0.0"
        (record,) = res.read(tmp_path / "results" / "results.jsonl")
        assert record["metrics"]["accuracy"]["n"] == 3 and record["timings"]["requests"] > 0
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
