"""The corpus pipeline end to end on real datatrove and real files: every input in the ledger once,
each kind of bad material refused by the right step, and a corpus `gptnl pack` can read."""

import gzip
import json
import re
import shutil
import string
import sys

import pytest
import yaml
from conftest import ROOT, SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptnl import pii
from gptnl.config import load_recipe
from gptnl.data_pipeline.build import build
from gptnl.data_pipeline.ledger import read_ledger
from gptnl.pack import pack

RECIPE = ROOT / "data_pipeline" / "recipes" / "default.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build(RECIPE, load_recipe(RECIPE), out)
    return out


def kept_docs(corpus):
    docs = []
    for path in sorted((corpus / "documents").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            docs += [json.loads(line) for line in fh]
    return docs


def recipe_for(base, sources: list[dict], extra: str = ""):
    """A recipe in `base` over `sources` (name and path at least) with the project's licence policy."""
    shutil.copy(ROOT / "data_pipeline" / "licences.yaml", base / "licences.yaml")
    common = {"licence": "CC0-1.0", "publisher": "p", "url": "u", "retrieved": "x"}
    (base / "sources.yaml").write_text(yaml.safe_dump({"sources": [{**common, **src} for src in sources]}))
    recipe = base / "r.yaml"
    recipe.write_text("sources: sources.yaml\nlicences: licences.yaml\n" + extra)
    return recipe


def test_every_input_line_is_in_the_ledger_exactly_once(corpus):
    rows = read_ledger(corpus)
    lines = sum(1 for p in SAMPLE.glob("*.jsonl") for _ in p.open()) + \
        sum(1 for p in (SAMPLE / "bad").glob("*.jsonl") for line in p.open() if line.strip())
    assert len(rows) == lines == len({(r["source"], r["location"]) for r in rows})
    stats = json.loads((corpus / "stats.json").read_text())
    assert stats["inputs"] == lines == stats["kept"] + stats["refused"]
    assert {r["id"] for r in rows if r["outcome"] == "kept"} == {d["id"] for d in kept_docs(corpus)}


def test_bundled_sample_is_kept_whole(corpus):
    rows = [r for r in read_ledger(corpus) if r["source"] == "gptnl-sample"]
    assert len(rows) == 222 and all(r["outcome"] == "kept" for r in rows)  # 210 documents + 12 canary hosts


@pytest.mark.parametrize("tag, step, reason", [
    ("lang-en", "language", "language en"), ("lang-de", "language", "language de"),
    ("lang-af", "language", "language af"), ("lang-fy", "language", "language fy"),
    ("licence-nc", "licence", "non-commercial licence"), ("licence-nd", "licence", "no-derivatives licence"),
    ("licence-arr", "licence", "all rights reserved"), ("licence-missing", "licence", "licence missing"),
    ("licence-unknown", "licence", ""), ("tdm-reserved", "opt-out", "text and data mining reserved"),
])
def test_bad_material_is_refused_by_the_right_step(corpus, tag, step, reason):
    rows = {r["id"]: r for r in read_ledger(corpus)}
    bad = [json.loads(line) for line in (SAMPLE / "bad" / "bad.jsonl").read_text().splitlines()]
    tagged = [d for d in bad if d["expected"] == tag]
    assert tagged
    for d in tagged:
        row = rows[d["id"]]
        assert row["outcome"] == "refused" and row["step"] == step and reason in row["reason"], row


def test_boilerplate_is_refused(corpus):
    rows = [r for r in read_ledger(corpus) if r["id"].startswith("gptnl-bad-boilerplate")]
    assert len(rows) == 4 and all(r["outcome"] == "refused" for r in rows)
    assert {r["step"] for r in rows} <= {"boilerplate", "quality", "repetition", "c4"}
    cookie = next(r for r in rows if r["id"] == "gptnl-bad-boilerplate-01")
    assert cookie["reason"].startswith("boilerplate (") and "cookie or policy" in cookie["reason"]


def test_exact_duplicates_refused_naming_the_original(corpus):
    rows = [r for r in read_ledger(corpus) if r["id"].startswith("gptnl-bad-exact-dup")]
    refused = [r for r in rows if r["outcome"] == "refused"]
    assert len(rows) == 6 and len(refused) == 3
    assert all(r["step"] == "dedup" and "duplicate (exact) (of gptnl-bad-exact-dup-0" in r["reason"] for r in refused)


def test_near_duplicates_refused_one_of_each_pair_kept(corpus):
    rows = {r["id"]: r for r in read_ledger(corpus) if r["id"].startswith("gptnl-bad-near-dup")}
    for a, b in (("01", "02"), ("03", "04")):
        pair = [rows[f"gptnl-bad-near-dup-{a}"], rows[f"gptnl-bad-near-dup-{b}"]]
        assert sorted(r["outcome"] for r in pair) == ["kept", "refused"]
        refused = next(r for r in pair if r["outcome"] == "refused")
        assert refused["step"] == "near-dedup" and "MinHash" in refused["reason"]


def test_malformed_lines_are_refused_with_file_and_line(corpus):
    rows = [r for r in read_ledger(corpus) if r["step"] == "malformed"]
    assert len(rows) == 8
    assert all(r["reason"].startswith("malformed (sample/bad/malformed.jsonl:") for r in rows)
    assert any("empty 'text'" in r["reason"] for r in rows) and any("not valid JSON" in r["reason"] for r in rows)


def test_pii_is_replaced_and_counted(corpus):
    docs = {d["id"]: d for d in kept_docs(corpus)}
    for doc_id in ("gptnl-bad-pii-bsn-01", "gptnl-bad-pii-iban-01"):
        text = docs[doc_id]["text"]
        assert not [f for f in pii.find(text) if f.kind in ("BSN", "IBAN")]
        assert "<BSN>" in text or "<IBAN>" in text
    assert docs["gptnl-bad-pii-iban-01"]["metadata"]["pii"]["IBAN"] == 1
    stats = json.loads((corpus / "stats.json").read_text())
    assert stats["pii"]["BSN"] == 4 and stats["pii"]["IBAN"] == 5


def test_kept_documents_carry_language_and_licence(corpus):
    for d in kept_docs(corpus):
        assert d["lang"] == "nl" and d["lang_score"] >= 0.65 and d["licence"] == "CC0-1.0"
        assert d["source"] in ("gptnl-sample", "gptnl-sample-bad")


def test_card_and_manifest(corpus):
    card = (corpus / "CARD.md").read_text()
    for heading in ("## 1. General information", "## 2. List of data sources", "## 3. Data processing aspects",
                    "### Licences", "### Opt-outs honoured", "### Personal data", "### Refusals by step and reason"):
        assert heading in card
    assert "| gptnl-sample | gptnl team |" in card and "BSN 4" in card
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["stage"] == "data" and manifest["produced"]["documents"] == 235


def test_output_is_readable_by_pack(corpus, sample_tokenizer, tmp_path):
    m = pack(corpus, sample_tokenizer, 64, tmp_path / "shards", val_fraction=0.1)
    splits = m.produced.splits
    assert splits["train"].documents + splits["validation"].documents == 235


def test_rerun_is_identical_and_skips_finished_tasks(tmp_path, corpus):
    out = tmp_path / "again"
    build(RECIPE, load_recipe(RECIPE), out)
    assert (out / "ledger.jsonl.gz").read_bytes() == (corpus / "ledger.jsonl.gz").read_bytes()
    first = (out / "ledger.jsonl.gz").read_bytes()
    build(RECIPE, load_recipe(RECIPE), out)  # completion markers: nothing re-run, same outputs
    assert (out / "ledger.jsonl.gz").read_bytes() == first


def test_blocklist_refuses_ids_and_domains(tmp_path):
    (tmp_path / "blocklist.txt").write_text("gptnl-sample-faq-0001\ndomain:gptnl.example  # the whole site\n")
    recipe = recipe_for(tmp_path, [{"name": "s", "path": str(SAMPLE / "gemeente-en-faq.jsonl")}],
                        "blocklist: blocklist.txt\n")
    build(recipe, load_recipe(recipe), tmp_path / "out")
    rows = read_ledger(tmp_path / "out")
    assert len(rows) == 70 and all(r["step"] == "opt-out" for r in rows)
    by_id = {r["id"]: r["reason"] for r in rows}
    assert by_id["gptnl-sample-faq-0001"] == "opt-out (blocklist: id gptnl-sample-faq-0001)"
    assert by_id["gptnl-sample-faq-0002"] == "opt-out (blocklist: domain gptnl.example)"


line_strategy = st.one_of(
    st.builds(lambda i, t: json.dumps({"id": f"d{i}", "text": t}), st.integers(0, 10**6),
              st.text(alphabet=string.ascii_letters + " .", max_size=80)),
    st.builds(lambda t: json.dumps({"text": t}), st.text(max_size=20)),
    st.builds(lambda v: json.dumps({"id": "x", "text": v}),
              st.one_of(st.integers(), st.none(), st.lists(st.integers()))),
    st.text(alphabet=string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "").replace("\x0c", ""),
            min_size=1, max_size=40),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(line_strategy, min_size=1, max_size=30))
def test_ledger_invariant_under_random_malformed_input(tmp_path_factory, lines):
    base = tmp_path_factory.mktemp("random")
    (base / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = recipe_for(base, [{"name": "r", "path": "in.jsonl"}])
    stats = build(recipe, load_recipe(recipe), base / "out")
    expected = sum(1 for line in lines if line.strip())
    assert stats.inputs == expected == stats.kept + stats.refused == len(read_ledger(base / "out"))


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_identical_output(tmp_path):
    """A real SIGKILL of `gptnl data build` after its first task finished; the rerun skips finished
    tasks (datatrove's completion markers), redoes the rest, and writes exactly what an
    uninterrupted build writes: the same ledger bytes and the same documents."""
    import os
    import signal
    import subprocess
    import sys
    import time

    texts = [json.loads(line)["text"] for p in sorted(SAMPLE.glob("*.jsonl")) for line in p.open()]
    src = tmp_path / "in"
    src.mkdir()
    for part in range(4):  # four files, four tasks; enough text that one task takes seconds
        with open(src / f"part{part}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(800):
                text = texts[(i * 7 + part) % len(texts)] + f"\n\nVolgnummer {part}-{i} van deze reeks."
                fh.write(json.dumps({"id": f"p{part}-{i}", "text": text}, ensure_ascii=False) + "\n")
    recipe = recipe_for(tmp_path, [{"name": "s", "path": "in/*.jsonl"}], "tasks: 4\n")

    build(recipe, load_recipe(recipe), tmp_path / "whole")

    cmd = [sys.executable, "-m", "gptnl", "data", "build", str(recipe), "--out", str(tmp_path / "cut")]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    completions = tmp_path / "cut" / ".pipeline" / "logs" / "filter" / "completions"
    deadline = time.monotonic() + 300
    while not (completions.is_dir() and any(completions.iterdir())):
        assert victim.poll() is None and time.monotonic() < deadline, "build ended before it could be killed"
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert len(list(completions.iterdir())) < 4, "all tasks finished before the kill"
    assert not (tmp_path / "cut" / "ledger.jsonl.gz").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Skipping rank" in rerun.stderr or "skipping" in rerun.stderr.lower()
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert (cut / "ledger.jsonl.gz").read_bytes() == (whole / "ledger.jsonl.gz").read_bytes()
    names = sorted(p.name for p in (whole / "documents").glob("*.jsonl.gz"))
    assert names and names == sorted(p.name for p in (cut / "documents").glob("*.jsonl.gz"))
    for name in names:  # a task whose documents were all near-duplicates writes no file
        with gzip.open(cut / "documents" / name, "rt") as a, gzip.open(whole / "documents" / name, "rt") as b:
            assert a.read() == b.read()


def test_documents_sharing_a_13_gram_with_an_eval_item_are_refused(tmp_path):
    doc = json.loads((SAMPLE / "gemeente-en-faq.jsonl").read_text(encoding="utf-8").splitlines()[0])
    words = doc["text"].split()
    task = tmp_path / "tasks" / "kennis"
    task.mkdir(parents=True)
    item = {"question": "Vraag: " + " ".join(words[20:34]) + "?", "choices": ["a", "b"], "answer": 0}
    (task / "items.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\n")
    (tmp_path / "in.jsonl").write_text((SAMPLE / "gemeente-en-faq.jsonl").read_text(encoding="utf-8"))
    recipe = recipe_for(tmp_path, [{"name": "s", "path": "in.jsonl"}], "decontamination: {tasks: tasks}\n")
    build(recipe, load_recipe(recipe), tmp_path / "out")
    rows = {r["id"]: r for r in read_ledger(tmp_path / "out")}
    assert rows[doc["id"]]["step"] == "decontamination"
    assert rows[doc["id"]]["reason"] == "contamination (shares a 13-gram with evals task kennis)"
    assert sum(r["outcome"] == "kept" for r in rows.values()) == 69


def own_recipe(tmp_path):
    """The sample sources with a blocklist of the test's own (takedown appends to it)."""
    (tmp_path / "blocklist.txt").write_text("# test blocklist\n")
    recipe = recipe_for(tmp_path, [{"name": "gptnl-sample", "path": str(SAMPLE / "*.jsonl")}],
                        "blocklist: blocklist.txt\n")
    return recipe


def test_takedown_removes_documents_and_keeps_the_ledger_whole(tmp_path, sample_tokenizer):
    import subprocess
    import sys

    recipe = own_recipe(tmp_path)
    corpus = tmp_path / "corpus"
    build(recipe, load_recipe(recipe), corpus)
    pack(corpus, sample_tokenizer, 64, tmp_path / "shards", val_fraction=0.1)
    before = json.loads((tmp_path / "shards" / "manifest.json").read_text())["produced"]["splits"]
    ids = tmp_path / "ids.txt"
    ids.write_text("gptnl-sample-faq-0001\nhttps://gptnl.example/sample/gptnl-sample-verhaal-0002\n")

    proc = subprocess.run([sys.executable, "-m", "gptnl", "data", "takedown", str(corpus), "--ids", str(ids)],
                          capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "300"})
    assert proc.returncode == 0, proc.stderr
    assert "2 document(s) removed" in proc.stdout and f"rebuild with: gptnl pack {corpus.resolve()}" in proc.stdout

    rows = {r["id"]: r for r in read_ledger(corpus)}
    assert len(rows) == 222
    assert rows["gptnl-sample-faq-0001"] == {**rows["gptnl-sample-faq-0001"], "outcome": "refused",
                                             "step": "takedown", "reason": "takedown (id gptnl-sample-faq-0001)"}
    assert rows["gptnl-sample-verhaal-0002"]["step"] == "takedown"
    assert {d["id"] for d in kept_docs(corpus)} == {i for i, r in rows.items() if r["outcome"] == "kept"}
    assert len(kept_docs(corpus)) == 220
    stats = json.loads((corpus / "stats.json").read_text())
    assert stats["kept"] == 220 and stats["refused"] == 2 and stats["takedowns"][0]["removed"] == 2
    assert json.loads((corpus / "manifest.json").read_text())["produced"]["documents"] == 220
    assert not (corpus / ".pipeline").exists()  # no intermediate copy of the taken-down text is left
    assert "Takedown on" in (corpus / "CARD.md").read_text()
    assert "gptnl-sample-faq-0001" in (tmp_path / "blocklist.txt").read_text()  # the next build refuses it too

    ids.write_text("gptnl-sample-faq-0003\n")
    proc = subprocess.run([sys.executable, "-m", "gptnl", "data", "takedown", str(corpus), "--ids", str(ids),
                           "--rebuild"], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "300"})
    assert proc.returncode == 0, proc.stderr
    assert "1 document(s) removed" in proc.stdout and f"rebuilt: {tmp_path / 'shards'}" in proc.stdout
    assert "rebuild with" not in proc.stdout
    after = json.loads((tmp_path / "shards" / "manifest.json").read_text())["produced"]["splits"]
    assert sum(s["documents"] for s in after.values()) == sum(s["documents"] for s in before.values()) - 3

    rebuilt = build(recipe, load_recipe(recipe), tmp_path / "again")
    assert rebuilt.refused_by_step["opt-out"] == {"opt-out": 3}
    again = build(recipe, load_recipe(recipe), corpus)  # into the same folder: afresh, the blocklist refuses them
    assert again.kept == 219 and again.refused_by_step["opt-out"] == {"opt-out": 3}


def test_card_command_rewrites_the_card(tmp_path):
    from gptnl.data_pipeline.card import rewrite_card

    recipe = own_recipe(tmp_path)
    build(recipe, load_recipe(recipe), tmp_path / "c")
    (tmp_path / "c" / "CARD.md").unlink()
    assert rewrite_card(tmp_path / "c").read_text().startswith("# Data card: c")


@pytest.mark.slow
def test_ray_executor_writes_what_the_local_executor_writes(tmp_path, corpus):
    """The same recipe on a real local Ray (started and stopped by the build) gives the same corpus."""
    stats = build(RECIPE, load_recipe(RECIPE), tmp_path / "ray", workers=2, executor="ray")
    assert stats.kept == 235
    assert (tmp_path / "ray" / "ledger.jsonl.gz").read_bytes() == (corpus / "ledger.jsonl.gz").read_bytes()
    assert kept_docs(tmp_path / "ray") == kept_docs(corpus)


def test_unknown_executor_is_refused(tmp_path):
    from gptnl.errors import GptnlError

    with pytest.raises(GptnlError, match="allowed values are local, ray, slurm"):
        build(RECIPE, load_recipe(RECIPE), tmp_path / "x", executor="dask")
    with pytest.raises(GptnlError, match="--executor slurm needs --cluster"):
        build(RECIPE, load_recipe(RECIPE), tmp_path / "y", executor="slurm")


def test_slurm_array_jobs_survive_preemption_and_write_what_the_local_executor_writes(tmp_path, corpus,
                                                                                      slurm_cluster):
    """datatrove's Slurm executor on a real local Slurm, submitted with `gptnl slurm submit data`: one
    array job per stage chained with afterok, then the job that finishes the corpus. The filter task
    gets SIGUSR1 mid-run, as Slurm sends before a time limit or a preemption; it requeues itself, runs
    again, and the corpus is still the local one."""
    import subprocess
    import time

    from conftest import slurm_job, wait_slurm_job

    out = tmp_path / "slurm"
    res = subprocess.run([sys.executable, "-m", "gptnl", "slurm", "submit", "data", str(RECIPE), "--cluster",
                          str(slurm_cluster), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    jobs = dict(m.groups() for line in res.stderr.splitlines() if (m := re.fullmatch(r"([\w-]+): job (\d+)", line)))
    assert set(jobs) == {"filter", "signatures", "buckets", "clusters", "near-dedup"}, res.stderr
    sub = {"finalise": res.stdout.strip()}
    task = f"{jobs['filter']}_0"
    log = out / ".pipeline" / "logs" / "filter" / "slurm_logs" / f"{task}.out"
    deadline = time.monotonic() + 180
    while not (log.is_file() and "Launching pipeline for rank=0" in log.read_text()):
        assert time.monotonic() < deadline, f"filter task never started: {slurm_job(task)}"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", task], check=True)
    final = wait_slurm_job(sub["finalise"], timeout=600)
    assert final["JobState"] == "COMPLETED", (final, log.read_text()[-2000:])
    assert slurm_job(task)["Restarts"] == "1"
    text = log.read_text()  # --open-mode=append kept the first run's lines; Slurm notes the requeue
    assert text.count("Starting data processing job") == 2 and "DUE TO JOB REQUEUE" in text, text[-3000:]
    assert (out / "ledger.jsonl.gz").read_bytes() == (corpus / "ledger.jsonl.gz").read_bytes()
    assert kept_docs(out) == kept_docs(corpus)
    assert json.loads((out / "stats.json").read_text()) == json.loads((corpus / "stats.json").read_text())


def test_reads_parquet_text_folders_and_warc(tmp_path):
    from io import BytesIO

    import pyarrow as pa
    import pyarrow.parquet as pq
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    texts = [json.loads(line)["text"] for line in (SAMPLE / "nieuws-en-encyclopedie.jsonl").read_text().splitlines()]
    pq.write_table(pa.table({"id": ["p1", "p2", "p3"], "text": [texts[0], texts[1], None],
                             "licence": ["CC-BY-4.0", None, None]}), tmp_path / "rows.parquet")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text(texts[2], encoding="utf-8")
    (tmp_path / "txt" / "b.txt").write_bytes(b"\xff\xfe kapot")
    with open(tmp_path / "crawl.warc.gz", "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        writer.write_record(writer.create_warc_record("https://gemeente.example/nieuws/1", "conversion",
                                                      payload=BytesIO(texts[3].encode()),
                                                      warc_content_type="text/plain"))
        article = "".join(f"<p>{p}</p>" for p in texts[4].split("\n\n"))
        page = (f"<html><head><meta charset='iso-8859-1'><title>Nieuws</title></head><body>"
                f"<nav><a href='/'>Home</a> | <a href='/contact'>Contact</a> | <a href='/afval'>Afval</a></nav>"
                f"<article><h1>Nieuws uit de gemeente</h1>{article}</article>"
                f"<footer>Cookies | Privacyverklaring | Toegankelijkheid</footer></body></html>")
        for uri, ctype, body in [
                ("https://gemeente.example/", "text/html; charset=iso-8859-1", page.encode("latin-1")),
                ("https://gemeente.example/login", "text/html",
                 b"<html><body><div class='login'><form><input name='u'><input type='password'></form>"
                 b"</div></body></html>"),
                ("https://gemeente.example/logo.png", "image/png", b"\x89PNG\r\n")]:
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(uri, "response", payload=BytesIO(body), http_headers=http))
    recipe = recipe_for(tmp_path, [{"name": "pq", "path": "*.parquet", "format": "parquet"},
                                   {"name": "txt", "path": "txt/*.txt", "format": "txt"},
                                   {"name": "warc", "path": "*.warc.gz", "format": "warc"}])
    stats = build(recipe, load_recipe(recipe), tmp_path / "out")
    rows = {(r["source"], r["location"]): r for r in read_ledger(tmp_path / "out")}
    assert stats.inputs == 9 and len(rows) == 9
    assert rows[("pq", "rows.parquet:1")]["outcome"] == "kept" and rows[("pq", "rows.parquet:2")]["outcome"] == "kept"
    assert "'text' must be a string, got NoneType" in rows[("pq", "rows.parquet:3")]["reason"]
    assert rows[("txt", "txt/a.txt:1")]["outcome"] == "kept" and rows[("txt", "txt/a.txt:1")]["id"] == "txt/a.txt"
    assert "invalid UTF-8" in rows[("txt", "txt/b.txt:1")]["reason"]
    assert rows[("warc", "crawl.warc.gz:1")]["outcome"] == "kept"
    assert rows[("warc", "crawl.warc.gz:2")]["outcome"] == "kept"
    assert rows[("warc", "crawl.warc.gz:3")]["step"] == "html"
    assert "no main text" in rows[("warc", "crawl.warc.gz:3")]["reason"]
    assert "image/png content" in rows[("warc", "crawl.warc.gz:4")]["reason"]
    docs = {d["id"]: d for d in kept_docs(tmp_path / "out")}
    assert docs["p1"]["licence"] == "CC-BY-4.0" and docs["p2"]["licence"] == "CC0-1.0"
    warc_docs = {d["url"]: d for d in docs.values() if d["source"] == "warc"}
    assert set(warc_docs) == {"https://gemeente.example/nieuws/1", "https://gemeente.example/"}
    page_text = warc_docs["https://gemeente.example/"]["text"]
    first_paragraph = texts[4].split("\n\n")[1]
    assert first_paragraph[:80] in page_text  # the article, decoded from Latin-1
    assert "Privacyverklaring" not in page_text and "Contact" not in page_text  # not the menu or footer


def test_rerun_with_another_recipe_is_refused(tmp_path):
    from gptnl.errors import GptnlError

    recipe = recipe_for(tmp_path, [{"name": "s", "path": str(SAMPLE / "gemeente-en-faq.jsonl")}])
    build(recipe, load_recipe(recipe), tmp_path / "out")
    recipe.write_text(recipe.read_text() + "language: {min_score: 0.9}\n")
    with pytest.raises(GptnlError, match="holds a build of another recipe"):
        build(recipe, load_recipe(recipe), tmp_path / "out")


def test_a_url_or_date_of_the_wrong_type_is_a_malformed_row_not_a_crash(tmp_path):
    """The opt-out step matches urls against the blocklist and the card prints dates: a number or a
    list there is refused at the reader, with the field named, and the build goes on."""
    good = json.loads((SAMPLE / "gemeente-en-faq.jsonl").read_text(encoding="utf-8").splitlines()[0])
    (tmp_path / "in").mkdir()
    rows = [good, {**good, "id": "n1", "url": 12345}, {**good, "id": "n2", "created": ["2026"]}]
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = recipe_for(tmp_path, [{"name": "s", "path": "in/*.jsonl"}], "blocklist: blocklist.txt\n")
    (tmp_path / "blocklist.txt").write_text("domain:example.org\n")
    stats = build(recipe, load_recipe(recipe), tmp_path / "out")
    assert stats.inputs == 3 and stats.kept == 1
    reasons = {r["location"]: r["reason"] for r in read_ledger(tmp_path / "out") if r["outcome"] == "refused"}
    assert reasons == {"in/a.jsonl:2": "malformed (in/a.jsonl:2: 'url' must be a string, got int)",
                       "in/a.jsonl:3": "malformed (in/a.jsonl:3: 'created' must be a string, got list)"}


PROSE = (ROOT / "tests" / "fixtures" / "prose" / "ijssel.txt").read_text(encoding="utf-8").strip()


def test_one_line_prose_that_mentions_cookies_and_terug_naar_boven_is_kept_whole(tmp_path):
    """3,829 words of encyclopedic Dutch on one line, with "cookies", "privacybeleid" and a bird that
    flies "terug naar boven" in ordinary sentences (and here JavaScript and a privacy policy, which
    C4's line rule would have cut): the whole recipe keeps it, its text intact."""
    text = PROSE + (" Het digitale archief van de IJsselsteden is gebouwd met JavaScript, en wie het Engelstalige"
                    " portaal bezoekt, leest daar de privacy policy van de provincie.")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"id": "ijssel", "text": text}) + "\n")
    recipe = recipe_for(tmp_path, [{"name": "s", "path": "in/*.jsonl"}])
    stats = build(recipe, load_recipe(recipe), tmp_path / "out")
    assert stats.kept == 1, read_ledger(tmp_path / "out")
    assert kept_docs(tmp_path / "out")[0]["text"] == text


def test_bad_records_and_damaged_files_are_rows_and_the_build_goes_on(tmp_path):
    """A line nested 100k deep, an integer of 5,000 digits, a truncated `.jsonl.gz`, a WARC cut
    short and one with garbage after its last record: each a malformed row naming the file and
    where, and the good records of every file kept."""
    from io import BytesIO

    from warcio.warcwriter import WARCWriter

    texts = [json.loads(line)["text"] for line in (SAMPLE / "nieuws-en-encyclopedie.jsonl").read_text().splitlines()]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join([
        json.dumps({"id": "t0", "text": texts[0]}).encode(), b"[" * 100_000 + b"]" * 100_000,
        b'{"id": "n", "text": "t", "n": ' + b"7" * 5000 + b"}", json.dumps({"id": "t1", "text": texts[1]}).encode()]))
    whole = gzip.compress("".join(json.dumps({"id": f"g{i}", "text": texts[2 + i]}) + "\n" for i in range(3)).encode())
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(whole[:-30])
    (tmp_path / "crawl").mkdir()
    for name, cut, tail in (("cut.warc", -200, b""), ("junk.warc", None, b"garbage after the last record\r\n")):
        buf = BytesIO()
        writer = WARCWriter(buf, gzip=False)
        for i in (5, 6):
            writer.write_record(writer.create_warc_record(f"https://x.example/{name}/{i}", "conversion",
                                                          payload=BytesIO(texts[i].encode()),
                                                          warc_content_type="text/plain"))
        (tmp_path / "crawl" / name).write_bytes(buf.getvalue()[:cut] + tail)
    recipe = recipe_for(tmp_path, [{"name": "j", "path": "in/*"},
                                   {"name": "w", "path": "crawl/*.warc", "format": "warc"}])
    stats = build(recipe, load_recipe(recipe), tmp_path / "out")
    rows = {r["location"]: r for r in read_ledger(tmp_path / "out")}
    assert stats.inputs == len(rows) == stats.kept + stats.refused
    malformed = {loc: r["reason"] for loc, r in rows.items() if r["step"] == "malformed"}
    assert malformed["in/a.jsonl:2"] == "malformed (in/a.jsonl:2: not valid JSON: nested too deeply)"
    assert malformed["in/a.jsonl:3"].startswith("malformed (in/a.jsonl:3: not valid JSON: Exceeds the limit (4300")
    b_rows = sorted(loc for loc in rows if loc.startswith("in/b.jsonl.gz"))
    assert malformed[b_rows[-1]].startswith(f"malformed ({b_rows[-1]}: damaged gzip file after ")
    assert "Compressed file ended before the end-of-stream marker was reached" in malformed[b_rows[-1]]
    assert malformed["crawl/cut.warc:2"].startswith("malformed (crawl/cut.warc:2: damaged archive at byte ")
    assert "record cut short" in malformed["crawl/cut.warc:2"]
    assert malformed["crawl/junk.warc:3"].startswith("malformed (crawl/junk.warc:3: damaged archive at byte ")
    assert len(malformed) == 5
    kept = {d["id"] for d in kept_docs(tmp_path / "out")}
    assert {"t0", "t1", "g0"} <= kept and len(kept) == stats.kept


def test_a_symlink_loop_counts_each_file_once_and_skipped_paths_are_named(tmp_path, capsys):
    import os

    text = json.loads((SAMPLE / "nieuws-en-encyclopedie.jsonl").read_text().splitlines()[0])["text"]
    data = tmp_path / "data" / "2026"
    data.mkdir(parents=True)
    (data / "a.jsonl").write_text(json.dumps({"id": "a", "text": text}) + "\n")
    (data / "back").symlink_to(tmp_path / "data")                   # a loop
    (data / "folder.jsonl").mkdir()                                  # a folder named like a file
    (data / "gone.jsonl").symlink_to(tmp_path / "missing.jsonl")     # a broken link
    os.mkfifo(data / "pipe.jsonl")                                   # opening it would block the build
    recipe = recipe_for(tmp_path, [{"name": "s", "path": "data/**/*.jsonl"}])
    stats = build(recipe, load_recipe(recipe), tmp_path / "out")
    assert stats.inputs == 1 and [r["location"] for r in read_ledger(tmp_path / "out")] == ["data/2026/a.jsonl:1"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [f["path"] for f in manifest["consumed"]["files"]] == [str(data / "a.jsonl")]
    skipped = {s["path"]: s["reason"] for s in manifest["consumed"]["skipped"]}
    assert skipped == {str(data / "folder.jsonl"): "a folder, not a file",
                       str(data / "gone.jsonl"): "broken symbolic link",
                       str(data / "pipe.jsonl"): "a FIFO, not a regular file"}
    console = " ".join(capsys.readouterr().err.split())
    assert "3 path(s) matched by a source are not read" in console
    for path, reason in skipped.items():
        assert f"skipped {path} (s): {reason}" in console
