"""`gptnl data build` on hostile input, as an attacker or a messy crawl supplies it: random records,
files and archives (fuzzed JSON, deep nesting, huge integers, lone surrogates, invalid UTF-8,
over-long lines, gzip cut anywhere or followed by garbage, WARC records cut short, garbage after
the last record). The build never crashes, every input ends in exactly one ledger row (kept, or
refused with a step and a reason), and a gzip bomb costs time, not memory."""

import gzip
import io
import json
import subprocess
import sys
import textwrap

from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warcio.warcwriter import WARCWriter

from gptnl.config import load_recipe
from gptnl.data_pipeline.build import build
from gptnl.data_pipeline.ledger import read_ledger

PROSE = (ROOT / "tests" / "fixtures" / "prose" / "ijssel.txt").read_text(encoding="utf-8").split(". ")
LIMIT = 4096  # reader.max_record_bytes for these builds: small, so that over-long records are cheap to make


def recipe_for(base, sources: list[dict]):
    (base / "licences.yaml").write_text((ROOT / "data_pipeline" / "licences.yaml").read_text())
    common = {"licence": "CC0-1.0", "publisher": "p", "url": "u", "retrieved": "x"}
    (base / "sources.yaml").write_text(json.dumps({"sources": [{**common, **s} for s in sources]}))
    recipe = base / "r.yaml"
    recipe.write_text(f"sources: sources.yaml\nlicences: licences.yaml\nreader: {{max_record_bytes: {LIMIT}}}\n")
    return recipe


dutch = st.lists(st.sampled_from(PROSE), min_size=1, max_size=12).map(". ".join)
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)
record = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=12), st.integers(), st.none()), "text": st.one_of(dutch, st.text(), json_value)},
    optional={"licence": st.one_of(st.sampled_from(["CC0-1.0", "CC-BY-NC-4.0", "", "cc-by-4.0"]), json_value),
              "url": st.one_of(st.text(max_size=30), json_value), "tdm_reservation": json_value,
              "created": st.one_of(st.text(max_size=10), json_value), "extra": json_value})
hostile_line = st.one_of(
    record.map(lambda r: json.dumps(r).encode()),
    record.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    st.integers(1, 3000).map(lambda d: b"[" * d + b"]" * d),                                   # deep nesting
    st.integers(4301, 6000).map(lambda d: b'{"id": "n", "text": "t", "n": ' + b"9" * d + b"}"),  # huge integer
    st.sampled_from([b'{"id": "s", "text": "\\ud800"}', b'{"id": "\\udfff", "text": "t"}']),      # lone surrogates
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),                              # bytes, not text
    st.integers(LIMIT, 3 * LIMIT).map(lambda n: b'{"id": "l", "text": "' + b"x" * n + b'"}'),  # over-long
)


@st.composite
def jsonl_file(draw):
    lines = draw(st.lists(hostile_line, min_size=1, max_size=15))
    payload = b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    if not draw(st.booleans()):
        return "in.jsonl", payload
    data = gzip.compress(payload, mtime=0)
    damage = draw(st.sampled_from(["none", "cut", "garbage"]))
    if damage == "cut":  # a share of the length: WARC headers hold a fresh record id and date
        data = data[:max(1, int(draw(st.floats(0, 0.999)) * len(data)))]
    elif damage == "garbage":
        data += draw(st.binary(min_size=1, max_size=40))
    return "in.jsonl.gz", data


@st.composite
def warc_file(draw):
    buf = io.BytesIO()
    gz = draw(st.booleans())
    writer = WARCWriter(buf, gzip=gz)
    for i, (kind, body) in enumerate(draw(st.lists(st.tuples(
            st.sampled_from(["conversion", "resource", "metadata"]),
            st.one_of(dutch.map(str.encode), st.binary(max_size=200))), min_size=1, max_size=5))):
        writer.write_record(writer.create_warc_record(f"https://x.example/{i}", kind, payload=io.BytesIO(body),
                                                      warc_content_type="text/plain"))
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "cut", "garbage"]))
    if damage == "cut":  # a share of the length: WARC headers hold a fresh record id and date
        data = data[:max(1, int(draw(st.floats(0, 0.999)) * len(data)))]
    elif damage == "garbage":
        data += draw(st.binary(min_size=1, max_size=40))
    return "crawl.warc.gz" if gz else "crawl.warc", data


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(jsonl_file(), warc_file()), min_size=1, max_size=3))
def test_hostile_files_never_crash_and_every_input_ends_in_one_row(tmp_path_factory, files):
    base = tmp_path_factory.mktemp("hostile")
    sources = []
    for i, (name, data) in enumerate(files):
        (base / f"f{i}").mkdir()
        (base / f"f{i}" / name).write_bytes(data)
        sources.append({"name": f"s{i}", "path": f"f{i}/*", "format": "warc" if ".warc" in name else "jsonl"})
    recipe = recipe_for(base, sources)
    stats = build(recipe, load_recipe(recipe), base / "out")
    rows = read_ledger(base / "out")
    assert stats.inputs == stats.kept + stats.refused == len(rows)
    assert len({(r["source"], r["location"]) for r in rows}) == len(rows)
    assert all(r["step"] and r["reason"] for r in rows if r["outcome"] == "refused")
    assert all(r["outcome"] in ("kept", "refused") for r in rows)


BOMB = textwrap.dedent("""
    import gzip, json, resource, sys
    from pathlib import Path
    from gptnl.config import load_recipe
    from gptnl.data_pipeline.build import build

    base = Path(sys.argv[1])
    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    build(base / "warm" / "r.yaml", load_recipe(base / "warm" / "r.yaml"), base / "warm" / "out")
    before = peak_mib()
    stats = build(base / "bomb" / "r.yaml", load_recipe(base / "bomb" / "r.yaml"), base / "bomb" / "out")
    sources = {k: c.model_dump() for k, c in stats.sources.items()}
    print(json.dumps({"before": before, "after": peak_mib(), "stats": sources}))
""")


def test_a_gzip_bomb_costs_time_not_memory(tmp_path):
    """A 200 kB `.jsonl.gz` that expands to 200 MB without a newline, between two good lines, with
    the default limit: one malformed row, the good lines kept, and the build's peak RSS (measured in
    its own process, after a first build has loaded every library) grows by far less than 200 MB."""
    good = json.dumps({"id": "g", "text": ". ".join(PROSE[:40])}).encode()
    for name in ("warm", "bomb"):
        (tmp_path / name / "in").mkdir(parents=True)
        recipe_for(tmp_path / name, [{"name": "s", "path": "in/*.jsonl.gz"}]).write_text(
            "sources: sources.yaml\nlicences: licences.yaml\n")
    with gzip.open(tmp_path / "warm" / "in" / "a.jsonl.gz", "wb") as fh:
        fh.write(good + b"\n")
    with gzip.open(tmp_path / "bomb" / "in" / "a.jsonl.gz", "wb", compresslevel=9) as fh:
        fh.write(good + b'\n{"id": "b", "text": "')
        for _ in range(200):
            fh.write(b"a" * (1 << 20))
        fh.write(b'"}\n' + json.dumps({"id": "h", "text": ". ".join(PROSE[40:80])}).encode() + b"\n")
    assert (tmp_path / "bomb" / "in" / "a.jsonl.gz").stat().st_size < 1_000_000
    res = subprocess.run([sys.executable, "-c", BOMB, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["stats"] == {"s": {"inputs": 3, "kept": 2, "refused": 1}}
    row = next(r for r in read_ledger(tmp_path / "bomb" / "out") if r["outcome"] == "refused")
    assert row["location"] == "in/a.jsonl.gz:2" and "record of 209715224 bytes; the limit is 8388608" in row["reason"]
    assert out["after"] - out["before"] < 100, out
