"""Instruction tuning with real accelerate, DeepSpeed (gloo), peft and transformers on CPU.

Every run is a fresh process, launched the way a user launches it (`gptnl finetune`, torchrun,
`accelerate launch`). No GPU here: bf16 and NCCL paths are not exercised; the same code runs
them with the precision and backend swapped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT
from safetensors.torch import load_file

from gptnl.config import SftBatch, SftData
from gptnl.errors import GptnlError
from gptnl.finetune.batches import micro_batches
from gptnl.finetune.conversations import prepare
from gptnl.finetune.launch import requested_processes
from gptnl.finetune.render import ChatRenderer

INSTRUCTIONS = ROOT / "data_pipeline" / "instructions"
THREE_TURNS = [
    {"role": "system", "content": "Je bent de digitale assistent van gemeente Zuiderveen."},
    {"role": "user", "content": "Ik wil verhuizen. Wat moet ik doen?"},
    {"role": "assistant", "content": "Geeft u uw verhuizing door aan de gemeente waar u gaat wonen?"},
    {"role": "user", "content": "Ja, naar Lindewaarde."},
    {"role": "assistant", "content": "Dan doet u dat online bij Lindewaarde, met DigiD."},
    {"role": "user", "content": "Wanneer?"},
    {"role": "assistant", "content": "Uiterlijk vijf dagen na de verhuizing.\n1. Log in.\n2. Vul de datum in."},
]


@pytest.fixture(scope="session")
def hf_tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """The first 120 shipped conversations: enough for a few steps of global batch 16."""
    lines = [line for p in sorted(INSTRUCTIONS.glob("*.jsonl")) for line in p.read_text().splitlines()
             if line.strip()]
    out = tmp_path_factory.mktemp("sft-data") / "small.jsonl"
    out.write_text("\n".join(lines[::2][:120]) + "\n")
    return out


def write_config(path: Path, **overrides) -> Path:
    cfg = {
        "method": "full", "backend": "deepspeed", "zero_stage": 2, "seq_len": 1024,
        "batch": {"global_batch_size": 16, "micro_batch_size": 4},
        "optim": {"lr": 2e-3, "min_lr": 2e-4, "weight_decay": 0.0, "warmup_steps": 2, "grad_clip": 1.0},
        "max_steps": 6, "seed": 7, "eval": {"every": 0}, "checkpoint": {"every": 0, "keep_last": 2},
        "data": {"licences": str(ROOT / "data_pipeline" / "licences.yaml"), "val_fraction": 0.15,
                 "decontamination": {"tasks": None}},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        e.pop(key, None)
    return e


def launch(how: str, config: Path, base: Path, data: Path, out: Path, *extra: str, timeout: int = 240,
           popen: bool = False):
    args = [str(config), "--base", str(base), "--data", str(data), "--out", str(out), "--no-progress", *extra]
    bindir = Path(sys.executable).parent
    cmd = {
        "single": [sys.executable, "-m", "gptnl", "finetune", *args],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                     "-m", "gptnl.finetune", *args],
        "accelerate": [str(bindir / "accelerate"), "launch", "--num_processes", "2", "-m", "gptnl.finetune", *args],
    }[how]
    if popen:
        return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


# --- rendering and the loss mask -------------------------------------------------------------------

def test_training_text_is_the_chat_template_token_for_token(hf_tokenizer):
    enc = ChatRenderer(hf_tokenizer).encode(THREE_TURNS)
    assert enc.ids == list(hf_tokenizer.apply_chat_template(THREE_TURNS, tokenize=True)["input_ids"])


def test_loss_mask_covers_exactly_the_assistant_tokens(hf_tokenizer):
    enc = ChatRenderer(hf_tokenizer).encode(THREE_TURNS)
    masked = [i for i, m in zip(enc.ids, enc.mask, strict=True) if m]
    answers = [m["content"] for m in THREE_TURNS if m["role"] == "assistant"]
    assert hf_tokenizer.decode(masked) == "".join(a + "<|end|>" for a in answers)
    runs = sum(1 for k, m in enumerate(enc.mask) if m and (k == 0 or not enc.mask[k - 1]))
    assert runs == 3  # three separate assistant turns, nothing between them
    unmasked = hf_tokenizer.decode([i for i, m in zip(enc.ids, enc.mask, strict=True) if not m])
    for m in THREE_TURNS:
        if m["role"] != "assistant":
            assert m["content"] in unmasked
    assert "<|assistant|>" in unmasked and enc.targets == len(masked)
    hf = hf_tokenizer.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True, return_dict=True)
    assert [bool(m) for m in hf["assistant_masks"]] == enc.mask  # the template's own generation markers agree


def test_serving_prompt_is_the_training_prefix(hf_tokenizer):
    """What vLLM renders for the next answer (generation prompt) is exactly what training saw before it."""
    r = ChatRenderer(hf_tokenizer)
    full, spans = r.spans(THREE_TURNS)
    prompt = r.text(THREE_TURNS[:-1], add_generation_prompt=True)
    assert full.startswith(prompt) and spans[-1][0] == len(prompt)


# --- data: gates and ledger ------------------------------------------------------------------------

def test_shipped_instructions_pass_every_gate(hf_tokenizer):
    r = ChatRenderer(hf_tokenizer)
    cfg = SftData(licences=ROOT / "data_pipeline" / "licences.yaml", val_fraction=0.1,
                  decontamination={"tasks": None})
    prepared = prepare(INSTRUCTIONS, cfg, lambda c: r.length(c.messages), 4096)
    counts = prepared.counts()
    assert counts["read"] >= 300 and counts["refused"] == 0, counts["refused_by"]
    assert 0.05 < counts["val"] / counts["read"] < 0.16
    three = [c for c in prepared.train + prepared.val if sum(m["role"] == "assistant" for m in c.messages) == 3]
    assert len(three) >= 30


def test_every_line_is_kept_or_refused_with_its_reason(tmp_path, hf_tokenizer):
    good = {"id": "a", "source": "s", "licence": "CC0-1.0", "messages": THREE_TURNS[1:3]}
    lines = [
        json.dumps(good),
        json.dumps({**good, "id": "b", "licence": "CC-BY-NC-4.0"}),
        json.dumps({**good, "id": "c", "licence": ""}),
        json.dumps({**good, "id": "d", "messages": THREE_TURNS[1:2]}),  # ends with the user
        json.dumps({**good, "id": "e", "messages": [{"role": "bot", "content": "x"}]}),
        json.dumps(good),  # duplicate id
        "{not json",
        json.dumps({**good, "id": "f", "messages": [
            {"role": "user", "content": "Mijn BSN is 111222333, klopt dat?"},
            {"role": "assistant", "content": "Mail naar jan@voorbeeld.nl."}]}),
        json.dumps({**good, "id": "g", "messages": [THREE_TURNS[1], {"role": "assistant", "content": "lang " * 900}]}),
        json.dumps({**good, "id": "h", "messages": [THREE_TURNS[1], {
            "role": "assistant", "content": "de hoofdstad van het land ligt aan de grote rivier en heeft veel "
                                            "oude bruggen over het water"}]}),
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(lines) + "\n")
    tasks = tmp_path / "tasks" / "geo"
    tasks.mkdir(parents=True)
    (tasks / "items.jsonl").write_text(json.dumps({"q": "De hoofdstad van het land ligt aan de grote rivier en "
                                                        "heeft veel oude bruggen over het water."}) + "\n")
    r = ChatRenderer(hf_tokenizer)
    cfg = SftData(licences=ROOT / "data_pipeline" / "licences.yaml", val_fraction=0.0,
                  decontamination={"tasks": tmp_path / "tasks", "n_grams": 13})
    prepared = prepare(tmp_path / "chat.jsonl", cfg, lambda c: r.length(c.messages), 512)
    by_line = {row["location"]: row for row in prepared.ledger}
    assert len(prepared.ledger) == len(lines) == len(by_line)
    assert [by_line[f"chat.jsonl:{n}"]["outcome"] for n in (1, 8)] == ["kept", "kept"]
    expect = {2: ("licence", "non-commercial"), 3: ("licence", "licence missing"),
              4: ("malformed", "the last message must be the assistant's"),
              5: ("malformed", "messages[0].role 'bot'"), 6: ("duplicate", "first at chat.jsonl:1"),
              7: ("malformed", "not valid JSON"), 9: ("length", "more than seq_len 512"),
              10: ("contamination", "evals task geo")}
    for line, (step, text) in expect.items():
        row = by_line[f"chat.jsonl:{line}"]
        assert row["outcome"] == "refused" and row["step"] == step and text in row["reason"], row
    scrubbed = next(c for c in prepared.train if c.id == "f")
    assert "111222333" not in scrubbed.messages[0]["content"] and "<BSN>" in scrubbed.messages[0]["content"]
    assert "jan@voorbeeld.nl" not in scrubbed.messages[1]["content"]
    assert prepared.counts()["pii"] == {"BSN": 1, "EMAIL": 1}


def test_batches_are_the_same_global_batch_for_any_process_count():
    lengths = [10 + (i * 37) % 90 for i in range(50)]
    for step in range(5):
        one = micro_batches(step, lengths, 16, 4, 0, 1, seed=3)
        two = [b for r in range(2) for b in micro_batches(step, lengths, 16, 4, r, 2, seed=3)]
        assert sorted(i for b in one for i in b) == sorted(i for b in two for i in b)
        assert len(one) == 4 and all(len(micro_batches(step, lengths, 16, 4, r, 2, 3)) == 2 for r in range(2))
    with pytest.raises(GptnlError, match="not a multiple of micro_batch_size 4 x 2 processes"):
        SftBatch(global_batch_size=12, micro_batch_size=4).accumulation(2)


def test_accelerate_command_line_is_read():
    assert requested_processes(["/v/bin/python", "/v/bin/accelerate", "launch", "--num_processes", "2", "-m", "x"]) == 2
    assert requested_processes(["/v/bin/accelerate", "launch", "--num-processes=4", "t.py"]) == 4
    assert requested_processes(["/v/bin/python", "-m", "torch.distributed.run", "--nproc_per_node=2"]) is None


# --- real training runs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_base, small_data) -> Path:
    out = tmp_path_factory.mktemp("ft") / "single"
    launch("single", write_config(out.parent / "c.yaml"), tiny_base, small_data, out)
    return out


def test_one_process_run_learns_and_exports_a_chat_model(single_run):
    evals = json.loads((single_run / "eval.json").read_text())
    assert evals["val_loss_after"] < evals["val_loss_before"] - 0.2, evals
    steps = metrics(single_run)
    assert [m["step"] for m in steps] == list(range(1, 7)) and all(m["processes"] == 1 for m in steps)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(single_run / "model")
    model = AutoModelForCausalLM.from_pretrained(single_run / "model")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hoe vraag ik een paspoort aan?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]
    end = tok.convert_tokens_to_ids("<|end|>")
    assert end in json.loads((single_run / "model" / "generation_config.json").read_text())["eos_token_id"]
    ledger = (single_run / "data" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 120


@pytest.mark.parametrize("stage", [2, 3])
def test_two_processes_under_deepspeed_report_the_one_process_losses(tmp_path, single_run, tiny_base, small_data,
                                                                     stage):
    """torchrun x2 with the DeepSpeed plugin (gloo): same steps, same losses, not doubled; at ZeRO-3
    the sharded weights are gathered into the same exported model."""
    out = tmp_path / "two"
    launch("torchrun", write_config(tmp_path / "c.yaml", zero_stage=stage), tiny_base, small_data, out)
    one, two = metrics(single_run), metrics(out)
    assert all(m["processes"] == 2 for m in two)
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4 * a["loss"], (a, b)
    ref = load_file(str(single_run / "model" / "model.safetensors"))
    ours = load_file(str(out / "model" / "model.safetensors"))
    assert ours.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-3, atol=1e-4)


def test_accelerate_launch_on_cpu_gets_its_two_processes_with_plain_ddp(tmp_path, single_run, tiny_base,
                                                                         small_data):
    """`accelerate launch --num_processes 2` on a machine without GPUs starts one process; the run
    notices, restarts itself under torchrun with two, and DDP over gloo gives the 1-process losses."""
    out = tmp_path / "ddp"
    res = launch("accelerate", write_config(tmp_path / "c.yaml", backend="ddp"), tiny_base, small_data, out)
    assert "restarting under torchrun with 2" in res.stdout + res.stderr
    one, two = metrics(single_run), metrics(out)
    assert all(m["processes"] == 2 for m in two)
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4 * a["loss"], (a, b)


TRAP = """
import os, sys
from accelerate import Accelerator
from gptnl.errors import GptnlError
from gptnl.finetune.launch import check_world
if sys.argv[1] == "deepspeed":
    from accelerate.utils import DeepSpeedPlugin
    from gptnl.trainer.distributed import import_deepspeed
    import_deepspeed()
    acc = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config={"train_micro_batch_size_per_gpu": 1,
                                                                     "zero_optimization": {"stage": 2}}))
else:
    acc = Accelerator()
try:
    check_world(acc)
    print("rank", os.environ["RANK"], "NOT CAUGHT", acc.num_processes, flush=True)
except GptnlError as exc:
    print("rank", os.environ["RANK"], "CAUGHT", exc, flush=True)
"""


@pytest.mark.parametrize("kind", ["ddp", "deepspeed"])
def test_cpu_traps_are_caught_not_trained_through(tmp_path, kind):
    """Without the fixes (ACCELERATE_USE_CPU for DDP, gloo for the DeepSpeed plugin), accelerate on CPU
    sees one process in each of two: the guard the trainer runs stops both, naming the cause."""
    script = tmp_path / "trap.py"
    script.write_text(TRAP)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), kind], env=env(), capture_output=True, text=True, timeout=300)
    out = res.stdout
    assert out.count("CAUGHT") == 2 and "NOT CAUGHT" not in out, out + res.stderr[-3000:]
    assert "2 processes were started but accelerate sees 1" in out


LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_base, small_data) -> Path:
    out = tmp_path_factory.mktemp("lora") / "lora"
    launch("single", write_config(out.parent / "c.yaml", method="lora", backend="ddp", lora=LORA), tiny_base,
           small_data, out)
    return out


def test_lora_changes_only_the_adapter_and_merges_to_base_plus_adapter(lora_run, tiny_base):
    out = lora_run
    base = load_file(str(tiny_base / "model.safetensors"))
    merged = load_file(str(out / "model" / "model.safetensors"))
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert all(".lora_" in k for k in adapter)
    scale = 8 / 4
    changed = 0
    for name, w in base.items():
        prefix = name.removesuffix(".weight")
        a_key = next((k for k in adapter if k.startswith(f"base_model.model.{prefix}.lora_A")), None)
        if a_key is None:
            assert torch.equal(merged[name], w), f"{name} changed without an adapter"
            continue
        lora_a, lora_b = adapter[a_key], adapter[a_key.replace("lora_A", "lora_B")]
        assert lora_b.abs().max() > 0  # training moved the adapter off its zero init
        torch.testing.assert_close(merged[name], w + scale * lora_b @ lora_a, rtol=1e-5, atol=1e-6)
        changed += 1
    assert changed == 4  # q_proj and v_proj in 2 layers
    evals = json.loads((out / "eval.json").read_text())
    assert evals["val_loss_after"] < evals["val_loss_before"]


def test_lora_under_zero3_on_two_processes_matches_one_process_ddp(tmp_path, lora_run, tiny_base, small_data):
    """LoRA with the DeepSpeed plugin at ZeRO-3 (parameters sharded, gathered for the export)."""
    out = tmp_path / "z3"
    launch("torchrun", write_config(tmp_path / "c.yaml", method="lora", backend="deepspeed", zero_stage=3,
                                    lora=LORA), tiny_base, small_data, out)
    for a, b in zip(metrics(lora_run), metrics(out), strict=True):
        assert b["processes"] == 2 and abs(a["loss"] - b["loss"]) < 1e-4 * a["loss"], (a, b)
    ours = load_file(str(out / "model" / "model.safetensors"))
    ref = load_file(str(lora_run / "model" / "model.safetensors"))
    assert ours.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-3, atol=1e-5)


def test_preempted_run_resumes_to_the_uninterrupted_losses(tmp_path, single_run, tiny_base, small_data):
    """SIGUSR1 (Slurm's warning) mid-run: checkpoint, exit 75; the rerun resumes and every step's loss
    equals the run that was never interrupted."""
    out = tmp_path / "pre"
    config = write_config(tmp_path / "c.yaml")
    proc = launch("single", config, tiny_base, small_data, out, popen=True)
    deadline = time.monotonic() + 300
    while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == 75, proc.stdout.read()[-3000:]
    saved = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("global_step"))
    assert len(saved) == 1 and not (out / "model").exists()
    launch("single", config, tiny_base, small_data, out)
    resumed = {m["step"]: m["loss"] for m in metrics(out)}
    assert sorted(resumed) == list(range(1, 7))
    for m in metrics(single_run):
        assert abs(resumed[m["step"]] - m["loss"]) < 1e-5 * m["loss"], (m, resumed[m["step"]])


def test_clear_refusals(tmp_path, tiny_base, small_data):
    res = subprocess.run([sys.executable, "-m", "gptnl", "finetune", str(write_config(tmp_path / "c.yaml")),
                          "--base", str(tmp_path), "--data", str(small_data), "--out", str(tmp_path / "o")],
                         env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "not a Hugging Face model folder" in res.stderr + res.stdout
    bad = write_config(tmp_path / "b.yaml", batch={"global_batch_size": 10, "micro_batch_size": 4})
    res = subprocess.run([sys.executable, "-m", "gptnl", "finetune", str(bad), "--base", str(tiny_base),
                          "--data", str(small_data), "--out", str(tmp_path / "o2")],
                         env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "global_batch_size 10 is not a multiple" in res.stderr + res.stdout


def test_another_process_count_resumes_through_a_universal_checkpoint(tmp_path, single_run, tiny_base, small_data):
    """Two processes under ZeRO-2 are killed after their step-3 checkpoint; one process refuses that
    checkpoint, naming DeepSpeed's conversion command; after it, `--universal` resumes on one process
    and every step's loss is the uninterrupted one-process run's."""
    out = tmp_path / "uni"
    config = write_config(tmp_path / "c.yaml", checkpoint={"every": 3})
    args = [str(config), "--base", str(tiny_base), "--data", str(small_data), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "gptnl.finetune", *args], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 4):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before step 4"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    refused = subprocess.run([sys.executable, "-m", "gptnl", "finetune", *args], env=env(), capture_output=True,
                             text=True, timeout=240)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-3000:]
    message = refused.stderr + refused.stdout
    command = message[message.index("`python -m deepspeed") + 1:message.index("` and resume with `--universal`")]
    assert "global_step3/pytorch_model" in command, command
    conv = subprocess.run([sys.executable, *command.split()[1:]], env=env(), capture_output=True, text=True,
                          timeout=240)
    assert conv.returncode == 0, conv.stdout[-2000:] + conv.stderr[-3000:]

    launch("single", config, tiny_base, small_data, out, "--universal")
    resumed = {m["step"]: m for m in metrics(out)}
    assert sorted(resumed) == list(range(1, 7))
    assert [resumed[s]["processes"] for s in range(1, 7)] == [2, 2, 2, 1, 1, 1]
    for m in metrics(single_run):
        assert abs(resumed[m["step"]]["loss"] - m["loss"]) < 1e-4 * m["loss"], (m, resumed[m["step"]])
    assert (out / "model" / "model.safetensors").is_file()
