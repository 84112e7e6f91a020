"""The licence gate: fail closed, with reasons people can act on."""

import json

import pytest
from conftest import ROOT, SAMPLE

from gptnl.config import load_licence_policy
from gptnl.data_pipeline.licences import LicenceGate
from gptnl.errors import ConfigError

POLICY = ROOT / "data_pipeline" / "licences.yaml"


@pytest.fixture(scope="module")
def gate():
    return LicenceGate(load_licence_policy(POLICY))


@pytest.mark.parametrize("licence, attribution, share_alike", [
    ("CC0-1.0", False, False), ("cc-by-4.0", True, False), ("CC-BY-SA-4.0", True, True), ("ODC-By-1.0", True, False),
    ("LicenseRef-NL-Auteurswet-Art11", False, False),
])
def test_admits_open_licences_with_their_obligations(gate, licence, attribution, share_alike):
    d = gate.decide(licence)
    assert d.admitted and d.terms.attribution == attribution and d.terms.share_alike == share_alike


@pytest.mark.parametrize("licence, reason", [
    ("CC-BY-NC-4.0", "non-commercial licence (CC-BY-NC-4.0)"),
    ("CC-BY-NC-SA-4.0", "non-commercial licence"),
    ("CC-BY-ND-4.0", "no-derivatives licence (CC-BY-ND-4.0)"),
    ("LicenseRef-All-Rights-Reserved", "all rights reserved"),
    ("Proprietary-Unknown", "all rights reserved"),
    ("GPL-3.0-only", "unknown licence (GPL-3.0-only)"),
    ("", "licence missing"),
    (None, "licence missing"),
    ("   ", "licence missing"),
])
def test_refuses_everything_else_with_a_reason(gate, licence, reason):
    d = gate.decide(licence)
    assert not d.admitted and reason in d.reason


def test_bundled_bad_licences_refused_and_sample_admitted(gate):
    for line in (SAMPLE / "bad" / "bad.jsonl").read_text().splitlines():
        doc = json.loads(line)
        if doc["expected"].startswith("licence-"):
            assert not gate.decide(doc["licence"]).admitted, doc["id"]
    for path in SAMPLE.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            assert gate.decide(json.loads(line)["licence"]).admitted


def test_policy_errors_name_the_field(tmp_path):
    p = tmp_path / "licences.yaml"
    p.write_text("allow:\n  CC0-1.0: {attribution: maybe}\n")
    with pytest.raises(ConfigError, match=r"allow\.CC0-1\.0\.attribution"):
        load_licence_policy(p)
    p.write_text("allow: {}\n")
    with pytest.raises(ConfigError, match="allow"):
        load_licence_policy(p)
