"""The DeepSpeed trainer, run for real: torchrun with 2 CPU processes on gloo, real checkpoints,
real signals and real process kills. Only the GPU is missing (bf16 and NCCL paths are not run here)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import transformers
import yaml
from conftest import (
    SAMPLE,
    losses,
    run_trainer,
    trainer_cmd,
    trainer_env,
    transformers_llama,
    wait_for_step,
    write_train_config,
)

from gptnl.hf import load_pretrained
from gptnl.pack import pack
from gptnl.train.export import export_run
from gptnl.trainer.preemption import EXIT_PREEMPTED

pytestmark = pytest.mark.slow


def test_zero_stages_0_to_3_train_and_agree(tmp_path, sample_shards):
    """Each ZeRO stage trains 6 steps in 2 processes and they compute the same training: ZeRO
    partitions state, it must not change the math. With gradient accumulation the stages sum
    gradients in different orders, so losses agree to float rounding (seen: 3e-7), not bit for bit."""
    runs, params = {}, set()
    for stage in (0, 1, 2, 3):
        cfg = write_train_config(tmp_path / f"s{stage}.yaml", sample_shards, zero_stage=stage, max_steps=6,
                                 checkpoint={"every": 0, "keep_last": 1})
        proc = run_trainer(cfg, tmp_path / f"run{stage}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[stage] = losses(tmp_path / f"run{stage}")
        assert sorted(runs[stage]) == list(range(1, 7))
        assert runs[stage][6] < runs[stage][1]
        meta = json.loads((tmp_path / f"run{stage}" / "global_step6" / "gptnl_complete.json").read_text())
        assert meta["world_size"] == 2 and meta["zero_stage"] == stage
        manifest = json.loads((tmp_path / f"run{stage}" / "manifest.json").read_text())
        params.add(manifest["produced"]["parameters"])  # counted before ZeRO-3 shards the parameters
    assert len(params) == 1 and params.pop() > 1_000_000
    # activation checkpointing recomputes the forward pass in backward: same numbers, less memory
    cfg = write_train_config(tmp_path / "ac.yaml", sample_shards, zero_stage=2, max_steps=6,
                             activation_checkpointing=True, checkpoint={"every": 0, "keep_last": 1})
    proc = run_trainer(cfg, tmp_path / "run_ac")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs["2+ac"] = losses(tmp_path / "run_ac")
    for stage in (1, 2, 3, "2+ac"):
        for step, loss in runs[0].items():
            assert abs(runs[stage][step] - loss) < 1e-5, (stage, step)
    # compile: true runs the model and the loss through Inductor, which fuses and reorders float
    # operations: the same training to float rounding (seen: 2e-5 relative), and the same export
    cfg = write_train_config(tmp_path / "compiled.yaml", sample_shards, zero_stage=2, max_steps=6, compile=True,
                             checkpoint={"every": 0, "keep_last": 1})
    proc = run_trainer(cfg, tmp_path / "run_compiled", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compiled = losses(tmp_path / "run_compiled")
    assert compiled.keys() == runs[0].keys()
    for step, loss in runs[0].items():
        assert abs(compiled[step] - loss) < 2e-4 * loss, (step, compiled[step], loss)

    # export reads ZeRO-0 weights from the module states and ZeRO-3 weights from the fp32 partitions
    exported = {s: load_pretrained(export_run(tmp_path / f"run{s}", tmp_path / f"model{s}")).eval()
                for s in (0, 3, "_compiled")}
    ids = torch.arange(2, 50).unsqueeze(0)
    with torch.no_grad():
        assert (exported[0](ids) - exported[3](ids)).abs().max().item() < 1e-3
        assert (exported[0](ids) - exported["_compiled"](ids)).abs().max().item() < 1e-3


def kill_at_step(cfg, run, step: int) -> int:
    """Start a 2-process run, SIGKILL its whole process group (as a node failure would) once `step`
    is logged; the last step it logged."""
    victim = subprocess.Popen(trainer_cmd(cfg, run, 2), env=trainer_env(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(run, step, victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    return max(losses(run))


def test_exact_resume_after_sigkill(tmp_path, sample_shards):
    """A 2-process ZeRO-2 run is killed with SIGKILL (the whole process group, as a node failure
    would) after its step-8 checkpoint; the restart resumes and its losses equal the uninterrupted
    run's bit for bit (CPU fp32 with a fixed reduction order is deterministic)."""
    kw = dict(zero_stage=2, max_steps=40, checkpoint={"every": 8, "keep_last": 2}, eval={"every": 0, "batches": 1})
    ref_cfg = write_train_config(tmp_path / "ref.yaml", sample_shards, **kw)
    proc = run_trainer(ref_cfg, tmp_path / "ref")
    assert proc.returncode == 0, proc.stderr
    reference = losses(tmp_path / "ref")
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
           if '"loss"' in line]
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[2] == pytest.approx(1e-3)  # warmup 2: 1/3, 2/3, then peak

    cfg = write_train_config(tmp_path / "cut.yaml", sample_shards, **kw)
    run = tmp_path / "cut"
    killed_at = kill_at_step(cfg, run, 11)
    assert killed_at < 40, "the run finished before it could be killed"
    assert (run / "global_step8" / "gptnl_complete.json").is_file()

    proc = run_trainer(cfg, run)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, 41))  # records after the checkpoint were replaced, not duplicated
    assert [resumed[s] for s in range(9, 41)] == [reference[s] for s in range(9, 41)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_writes_checkpoint_and_exits_with_preempted_code(tmp_path, sample_shards, sig):
    """SIGTERM is what a scheduler sends at the end; SIGUSR1 is Slurm's `--signal` warning before it."""
    cfg = write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=100000,
                             checkpoint={"every": 0, "keep_last": 2}, eval={"every": 0, "batches": 1})
    run = tmp_path / "run"
    proc = subprocess.Popen(trainer_cmd(cfg, run, 1), env=trainer_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(run, 3, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err
    step = max(losses(run))
    assert (run / "latest").read_text() == f"global_step{step}"
    assert (run / f"global_step{step}" / "gptnl_complete.json").is_file()
    assert f"exiting with code {EXIT_PREEMPTED}" in out

    again = run_trainer(cfg, run, 1, "--max-steps", str(step + 2))
    assert again.returncode == 0, again.stderr
    assert f"resumed from {run / f'global_step{step}'}" in again.stdout


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, sample_shards):
    cfg = write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=8, checkpoint={"every": 4, "keep_last": 3})
    run = tmp_path / "run"
    assert run_trainer(cfg, run).returncode == 0
    optim = next((run / "global_step8").glob("*optim_states.pt"))
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the checksum can tell
    optim.write_bytes(bytes(data))

    proc = run_trainer(cfg, run, 2, "--max-steps", "10")
    assert proc.returncode == 0, proc.stderr
    assert "global_step8 skipped: zero_pp_rank" in proc.stderr and "does not match its checksum" in proc.stderr
    assert f"resumed from {run / 'global_step4'}" in proc.stdout
    assert sorted(losses(run)) == list(range(1, 11))


def test_half_written_checkpoint_is_skipped(tmp_path, sample_shards):
    cfg = write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=8, checkpoint={"every": 4, "keep_last": 3})
    run = tmp_path / "run"
    assert run_trainer(cfg, run, 1).returncode == 0
    (run / "global_step8" / "gptnl_complete.json").unlink()  # as if killed before the marker
    proc = run_trainer(cfg, run, 1)
    assert proc.returncode == 0, proc.stderr
    assert "no completion marker" in proc.stderr and f"resumed from {run / 'global_step4'}" in proc.stdout


def test_other_world_size_names_the_conversion_command(tmp_path, sample_shards):
    cfg = write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=4, zero_stage=2)
    run = tmp_path / "run"
    assert run_trainer(cfg, run, 2).returncode == 0
    proc = run_trainer(cfg, run, 1, "--max-steps", "6")
    assert proc.returncode == 2
    assert "written by 2 processes with ZeRO-2; this run has 1" in proc.stderr
    assert f"python -m deepspeed.checkpoint.ds_to_universal --input_folder {run / 'global_step4'}" in proc.stderr
    assert "Traceback" not in proc.stderr

    # the named command works, and --universal then resumes on one process
    command = proc.stderr.split("`")[1].split()
    env = {**trainer_env(), "DS_ACCELERATOR": "cpu"}
    convert = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0, convert.stderr
    resumed = run_trainer(cfg, run, 1, "--max-steps", "6", "--universal")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run / 'global_step4_universal'} at step 4" in resumed.stdout
    assert "global batch changes from 16 sequences to 8" in resumed.stdout
    assert sorted(losses(run)) == list(range(1, 7))


def test_a_fixed_global_batch_trains_the_same_on_one_and_two_processes(tmp_path, sample_shards):
    """`batch.global_batch_size` instead of `grad_accum_steps`: the accumulation is derived (4 on one
    process, 2 on two), so both runs take the same 16 sequences per step and log the same losses."""
    cfg = write_train_config(tmp_path / "g.yaml", sample_shards, max_steps=3, eval={"every": 0},
                             batch={"micro_batch_size": 4, "global_batch_size": 16},
                             checkpoint={"every": 0, "keep_last": 1})
    runs = {}
    for n in (1, 2):
        proc = run_trainer(cfg, tmp_path / f"run{n}", n)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{n} process(es), ZeRO-2, fp32, 16×" in proc.stdout
        runs[n] = losses(tmp_path / f"run{n}")
    assert sorted(runs[1]) == sorted(runs[2]) == [1, 2, 3]
    for step, loss in runs[1].items():
        assert abs(runs[2][step] - loss) < 1e-5, (step, loss, runs[2][step])


def test_trained_run_exports_to_a_model_transformers_loads(tmp_path, sample_shards):
    cfg = write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=4, zero_stage=3,
                             metrics={"log_every": 1, "tensorboard": True},
                             eval={"every": 4, "batches": 2, "tasks": ["kennis"], "task_limit": 4})
    run = tmp_path / "run"
    proc = run_trainer(cfg, run, 2)
    assert proc.returncode == 0, proc.stderr
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r and r["val_ppl"] > 1 for r in records)
    scored = [r for r in records if "eval/kennis/accuracy_norm" in r]  # in-process, ZeRO-3's collective forward
    assert [r["step"] for r in scored] == [4] and 0 <= scored[0]["eval/kennis/accuracy_norm"] <= 1
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] is not None for r in records if "loss" in r)
    assert (run / "loss.png").stat().st_size > 1000

    out = export_run(run, tmp_path / "model")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["produced"]["step"] == 4 and manifest["consumed"]["checkpoint"] == "global_step4"
    card = (out / "README.md").read_text()  # the model card, from the run's own records
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["language"] == ["nl"] and front["library_name"] == "transformers"
    assert list(front["algoritmeregister"]) == ["naam", "korte_omschrijving", "doel_en_impact", "gegevens",
                                                 "technische_werking", "risicobeheer"]
    last_loss = [r for r in records if "loss" in r][-1]["loss"]
    assert "| steps | 4 |" in card and f"| final training loss | {last_loss:.3f} |" in card
    assert "not built by `gptnl data build`" in card and "- Tokens packed: train " in card  # the bare sample dir
    assert "Not evaluated yet" in card and "## Algoritmeregister" in card
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ours = load_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ids = tok("De gemeente heeft besloten om de weg te vernieuwen.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-5
    gen = hf.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == ids.shape[1] + 5


def test_shards_default_to_the_folder_beside_the_run_dir(tmp_path, sample_shards):
    from gptnl.config import load_train_config
    from gptnl.errors import ConfigError
    from gptnl.train.loop import find_shards

    cfg = load_train_config(write_train_config(tmp_path / "t.yaml", sample_shards))
    no_shards = cfg.model_copy(update={"data": cfg.data.model_copy(update={"shards": None})})
    assert find_shards(tmp_path / "given", no_shards, tmp_path / "run") == tmp_path / "given"
    assert find_shards(None, cfg, tmp_path / "run") == sample_shards
    with pytest.raises(ConfigError, match="no shards: pass --shards"):
        find_shards(None, no_shards, tmp_path / "run")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text("{}")
    assert find_shards(None, no_shards, tmp_path / "run") == (tmp_path / "shards").resolve()


def test_bf16_trains_and_exports_fp32_master_weights(tmp_path, sample_shards):
    """The GPU precision, run on CPU (DeepSpeed's CPU accelerator supports bf16): bf16 compute with
    fp32 master weights in the optimizer partitions, which export consolidates back to fp32."""
    cfg = write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=4, precision="bf16")
    run = tmp_path / "run"
    proc = run_trainer(cfg, run, 2)
    assert proc.returncode == 0, proc.stderr
    assert "ZeRO-2, bf16" in proc.stdout
    steps = losses(run)
    assert steps[4] < steps[1]
    out = export_run(run, tmp_path / "model")
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    # fp32 masters carry bits that a bf16 copy cannot: the export did not come from the bf16 module
    emb = weights["model.embed_tokens.weight"]
    assert not torch.equal(emb, emb.to(torch.bfloat16).float())


def test_document_masking_reaches_the_attention(tmp_path, sample_tokenizer):
    """`document_masking: true` trains (one process) and changes the very first loss, computed
    before any update: the packed documents no longer see each other. The per-document equality
    with documents trained alone is shown on the model itself (tests/unit/test_document_masking.py).
    Sequences of 512 tokens, so that most of them hold a document boundary."""
    shards = tmp_path / "shards"
    pack(SAMPLE, sample_tokenizer, 512, shards, val_fraction=0.1)
    first = {}
    for masked in (False, True):
        cfg = write_train_config(tmp_path / f"m{masked}.yaml", shards, max_steps=2, document_masking=masked,
                                 checkpoint={"every": 0, "keep_last": 1}, eval={"every": 2, "batches": 1})
        proc = run_trainer(cfg, tmp_path / f"run{masked}", 1)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        first[masked] = losses(tmp_path / f"run{masked}")[1]
    assert abs(first[True] - first[False]) > 1e-4, first


def transformers_base(tmp_path, tokenizer_dir):
    """A base shaped like Salamandra's or EuroLLM's (GQA, untied embeddings, llama3 RoPE scaling; cut
    down), saved by transformers in shards, with the tokenizer the shards were packed with."""
    return transformers_llama(tmp_path / "base", tokenizer_dir)


def config_without_model(cfg):
    data = yaml.safe_load(cfg.read_text())
    del data["model"]  # taken from the base
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_continued_pretraining_from_a_transformers_llama(tmp_path, sample_shards, sample_tokenizer):
    """Two processes continue a transformers Llama: the first step's loss is the base's own loss on
    that batch, and the export computes what transformers computes."""
    from gptnl.train.data import SequenceOrder, Shards

    base, hf_base = transformers_base(tmp_path, sample_tokenizer)
    cfg = config_without_model(write_train_config(tmp_path / "t.yaml", sample_shards, max_steps=4, zero_stage=2))
    run = tmp_path / "run"
    proc = run_trainer(cfg, run, 2, "--init-from", str(base))
    assert proc.returncode == 0, proc.stderr[-3000:]

    train = Shards(sample_shards, "train")
    order = SequenceOrder(len(train), 7)
    x = train.batch([order[p] for p in range(16)])  # step 1: 2 processes x micro 4 x accumulation 2
    with torch.no_grad():
        base_loss = hf_base(x, labels=x).loss.item()
    assert abs(losses(run)[1] - base_loss) < 1e-4, (losses(run)[1], base_loss)

    run_config = json.loads((run / "train_config.json").read_text())
    assert run_config["train"]["model"]["rope_scaling"]["rope_type"] == "llama3"
    assert run_config["base_model"]["licence"] == "apache-2.0" and run_config["base_model"]["fingerprint"]
    out = export_run(run, tmp_path / "model")
    exported = json.loads((out / "config.json").read_text())
    assert exported["rope_scaling"]["rope_type"] == "llama3" and exported["rope_scaling"]["factor"] == 8.0
    assert exported["tie_word_embeddings"] is False and exported["num_key_value_heads"] == 2
    assert json.loads((out / "manifest.json").read_text())["consumed"]["base_model"] == run_config["base_model"]
    assert f"| continued from | `{base.resolve()}`" in (out / "README.md").read_text()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ours = load_pretrained(out).eval()
    ids = x[:2]
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-5
        assert (hf(ids).logits - hf_base(ids).logits).abs().max().item() > 1e-4  # it trained on

    # the shards' tokenizer must be the base's own
    (base / "tokenizer.json").write_text((base / "tokenizer.json").read_text() + "\n")  # any other file
    refused = run_trainer(cfg, tmp_path / "run2", 1, "--init-from", str(base))
    assert refused.returncode == 2 and "the shards were packed with another tokenizer" in refused.stderr


def test_continued_pretraining_with_an_extended_vocabulary(tmp_path, sample_tokenizer):
    """Shards packed with the base's tokenizer extended by `gptnl tokenizer extend`: the run grows the
    base's embedding and output matrices, each new row the mean of its pieces' rows, so its first loss
    is what transformers computes for the base grown that way."""
    from gptnl import tokenizer_extend
    from gptnl.corpus import iter_documents
    from gptnl.train.data import SequenceOrder, Shards

    base, hf_base = transformers_base(tmp_path, sample_tokenizer)
    ext = tokenizer_extend.extend(base, (d.text for d in iter_documents(SAMPLE)), 64, tmp_path / "nl")
    assert (ext.base_vocab_size, ext.vocab_size) == (2000, 2064)  # the base's matrices have 2048 rows
    shards = tmp_path / "shards"
    pack(SAMPLE, tmp_path / "nl", 64, shards, val_fraction=0.1)
    cfg = config_without_model(write_train_config(tmp_path / "t.yaml", shards, max_steps=1,
                                                  checkpoint={"every": 0, "keep_last": 1}))
    run = tmp_path / "run"
    proc = run_trainer(cfg, run, 1, "--init-from", str(base))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "train_config.json").read_text())["train"]["model"]["vocab_size"] == 2112

    grown = transformers.LlamaForCausalLM(hf_base.config).eval()
    grown.resize_token_embeddings(2112)
    state = hf_base.state_dict()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = tokenizer_extend.extend_rows(state[name], ext, 2112)
    grown.load_state_dict(state)
    train = Shards(shards, "train")
    order = SequenceOrder(len(train), 7)
    x = train.batch([order[p] for p in range(8)])  # step 1: 1 process x micro 4 x accumulation 2
    assert int(x.max()) >= 2000  # the batch holds new tokens
    with torch.no_grad():
        expected = grown(x, labels=x).loss.item()
    assert abs(losses(run)[1] - expected) < 1e-4, (losses(run)[1], expected)

def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _steps(run_dir):
    """The step records without their timings."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "tflops_per_device", "mfu")}
            for r in _records(run_dir) if "loss" in r]


def test_mixture_resumes_after_sigkill_with_the_same_losses_and_counts(tmp_path, sample_tokenizer):
    """Three shard sets at 0.6/0.3/0.1: a 2-process run killed with SIGKILL and resumed logs the same
    loss and per-source counts at every step as an uninterrupted run; each source's validation loss
    is logged, and a resume with other weights is refused unless allowed (then recorded)."""
    sets = {}
    for i, name in enumerate(("nl", "en", "code")):
        sets[name] = tmp_path / name
        pack(SAMPLE, sample_tokenizer, 64, sets[name], val_fraction=0.1 + 0.05 * i)
    mixture = {"sources": [{"name": n, "shards": str(sets[n]), "weight": w}
                           for n, w in (("nl", 0.6), ("en", 0.3), ("code", 0.1))]}
    kw = dict(max_steps=24, checkpoint={"every": 6, "keep_last": 2}, eval={"every": 12, "batches": 1},
              data={"seed": 7, "mixture": mixture})
    ref_cfg = write_train_config(tmp_path / "ref.yaml", sets["nl"], **kw)
    proc = run_trainer(ref_cfg, tmp_path / "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = _records(tmp_path / "ref")
    last = [r for r in reference if "loss" in r][-1]
    seen = {n: last[f"tokens_seen/{n}"] for n in ("nl", "en", "code")}
    assert sum(seen.values()) == last["tokens_seen"] == 24 * 16 * 64
    for n, w in (("nl", 0.6), ("en", 0.3), ("code", 0.1)):
        assert abs(seen[n] / last["tokens_seen"] - w) <= 0.01, seen
    val = [r for r in reference if "val_loss" in r]
    assert len(val) == 2 and all(f"val_loss/{n}" in r for r in val for n in ("nl", "en", "code"))

    cfg = write_train_config(tmp_path / "cut.yaml", sets["nl"], **kw)
    run = tmp_path / "cut"
    assert kill_at_step(cfg, run, 8) < 24, "the run finished before it could be killed"
    proc = run_trainer(cfg, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout
    assert _steps(run) == _steps(tmp_path / "ref")  # loss, lr, grad norm and per-source counts, bit for bit

    changed = {**mixture, "sources": [{**s, "weight": 1.0} for s in mixture["sources"]]}
    more = dict(kw, max_steps=26, data={"seed": 7, "mixture": changed})
    refused = run_trainer(write_train_config(tmp_path / "other.yaml", sets["nl"], **more), run, 1)
    assert refused.returncode == 2 and "started with another data mixture" in refused.stderr
    allowed = dict(more, data={"seed": 7, "mixture": {**changed, "allow_change": True}})
    proc = run_trainer(write_train_config(tmp_path / "allowed.yaml", sets["nl"], **allowed), run, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = json.loads((run / "train_config.json").read_text())["mixture_changes"]
    assert len(recorded) == 1 and recorded[0]["to"]["sources"][0]["weight"] == 1.0
