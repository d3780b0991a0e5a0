"""The evaluation program (``python -m torchtune_config_writer.evaluate``) and the demo's counting task.

Everything is real: the tiny llama2 of ``demo.assets``, torchtune's components,
lm-eval's evaluator on a local task, inspect-ai's ``hf/`` provider, and the
program run as the child process the execute side starts. Configs are written
by hand, in the layout of Appendix B (``eval/run_000/epoch_0.heldout.yaml``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from torchtune_config_writer.demo import evaltask
from torchtune_config_writer.demo.assets import MODEL_DIMS, VOCAB_SIZE
from torchtune_config_writer.errors import one_line
from torchtune_config_writer.evaluate.harness import flatten_results
from torchtune_config_writer.evaluate.inspect_eval import model_folder
from torchtune_config_writer.evaluate.loading import checkpoint_key
from torchtune_config_writer.evaluate.program import Job

# ----------------------------------------------------------------------------- helpers


def run_program(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The program as the execute side starts it: a child process in the experiment directory, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "torchtune_config_writer.evaluate", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


def tune_run(recipe: str, config: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "tune"), "run", recipe, "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def write_config(exp: Path, run_id: str, epoch: int, evaluator: str, cfg: dict[str, Any]) -> Path:
    path = exp / "eval" / run_id / f"epoch_{epoch}.{evaluator}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"evaluator": evaluator, "run_id": run_id, "epoch": epoch, **cfg}, sort_keys=False))
    return path


def result_path(exp: Path, run_id: str, epoch: int, evaluator: str) -> Path:
    return exp / "runs" / run_id / "eval" / f"epoch_{epoch}" / f"{evaluator}.json"


def model_sections(assets: Any, checkpoint_dir: Path, checkpoint_file: str, out: Path) -> dict[str, Any]:
    """The keys heldout and lm_eval configs share: model, tokenizer, checkpointer, device, dtype, seed."""
    return {
        "model": {"_component_": "torchtune.models.llama2.llama2", "vocab_size": VOCAB_SIZE, **MODEL_DIMS},
        "tokenizer": {"_component_": "torchtune.models.llama2.llama2_tokenizer", "path": str(assets.tokenizer),
                      "max_seq_len": MODEL_DIMS["max_seq_len"]},
        "checkpointer": {"_component_": "torchtune.training.FullModelTorchTuneCheckpointer",
                         "checkpoint_dir": str(checkpoint_dir), "checkpoint_files": [checkpoint_file],
                         "output_dir": str(out), "model_type": "LLAMA2"},
        "device": "cpu",
        "dtype": "fp32",
        "seed": 0,
    }


def heldout_config(assets: Any, exp: Path, run_id: str, epoch: int, checkpoint_dir: Path, checkpoint_file: str,
                   data_file: Path, **keys: Any) -> dict[str, Any]:
    out = exp / "runs" / run_id / "eval" / f"epoch_{epoch}"
    return {"result_file": str(result_path(exp, run_id, epoch, "heldout")),
            **model_sections(assets, checkpoint_dir, checkpoint_file, out),
            "dataset": {"_component_": "torchtune.datasets.alpaca_dataset", "source": "json",
                        "data_files": str(data_file), "split": "train", "packed": False},
            "loss": {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"},
            "batch_size": 8, "limit": None, **keys}


def lm_eval_config(assets: Any, exp: Path, run_id: str, epoch: int, checkpoint_dir: Path, checkpoint_file: str,
                   include_path: Path, **keys: Any) -> dict[str, Any]:
    out = exp / "runs" / run_id / "eval" / f"epoch_{epoch}"
    return {"result_file": str(result_path(exp, run_id, epoch, "lm_eval")),
            **model_sections(assets, checkpoint_dir, checkpoint_file, out),
            "tasks": [evaltask.LM_EVAL_TASK], "include_path": str(include_path), "limit": None,
            "batch_size": 8, "max_seq_length": MODEL_DIMS["max_seq_len"], "enable_kv_cache": True, **keys}


def training_config(assets: Any, data_file: Path, out: Path, **overrides: Any) -> Path:
    """The demo's base config as a full finetune of the plain model on ``data_file`` (dotted overrides)."""
    cfg = OmegaConf.load(assets.base_config)
    cfg.output_dir = str(out)
    cfg.model = {"_component_": "torchtune.models.llama2.llama2", "vocab_size": VOCAB_SIZE, **MODEL_DIMS}
    cfg.dataset.data_files = str(data_file)
    cfg.optimizer_in_bwd = False
    cfg.metric_logger.filename = "log.txt"
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    path = out.parent / f"{out.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> evaltask.EvalTaskFiles:
    return evaltask.build_eval_task(tmp_path_factory.mktemp("evaltask"))


@pytest.fixture(scope="module")
def hf_base(tiny_assets: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in Hugging Face format."""
    return evaltask.build_hf_checkpoint(tiny_assets.checkpoint_dir / tiny_assets.checkpoint_file,
                                        tiny_assets.tokenizer, tmp_path_factory.mktemp("hf_base"),
                                        vocab_size=VOCAB_SIZE, dims=MODEL_DIMS)


# ----------------------------------------------------------------------------- pure parts


def test_flatten_results_names_metrics_by_task_and_filter_and_keeps_stderr_apart() -> None:
    output = {
        "results": {
            "count_group": {"alias": "count_group", "acc,none": 0.5, "acc_stderr,none": 0.1},
            "count_mc": {"alias": " - count_mc", "acc,none": 0.75, "acc_stderr,none": 0.05, "acc_norm,none": 0.7},
            "gen": {"alias": "gen", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A",
                    "sample_count": True},
        },
        "groups": {"count_group": {"alias": "count_group", "acc,none": 0.5}},
    }
    metrics, stderrs = flatten_results(output)
    assert metrics == {"count_group/acc": 0.5, "count_mc/acc": 0.75, "count_mc/acc_norm": 0.7,
                       "gen/exact_match_strict-match": 0.25}
    assert stderrs == {"count_group/acc_stderr": 0.1, "count_mc/acc_stderr": 0.05}


def test_one_line_keeps_type_and_first_line_and_is_short() -> None:
    assert one_line(FileNotFoundError("no such file\n  at line 3")) == "FileNotFoundError: no such file"
    assert one_line(KeyError()) == "KeyError"
    long = one_line(ValueError("x" * 1000), 300)  # the report's limit (evaluate/program.py)
    assert len(long) == 300 and long.endswith("...") and "\n" not in long


def test_checkpoint_key_ignores_where_the_checkpointer_writes_only() -> None:
    base = {"model": {"_component_": "torchtune.models.llama2.llama2", "num_layers": 2}, "device": "cpu",
            "dtype": "fp32", "checkpointer": {"checkpoint_dir": "/exp/runs/run_000/epoch_0", "output_dir": "/a"}}
    same = OmegaConf.merge(base, {"checkpointer": {"output_dir": "/b"}, "evaluator": "lm_eval"})
    other_epoch = OmegaConf.merge(base, {"checkpointer": {"checkpoint_dir": "/exp/runs/run_000/epoch_1"}})
    other_dtype = OmegaConf.merge(base, {"dtype": "bf16"})
    key = checkpoint_key(OmegaConf.create(base))
    assert key == checkpoint_key(same)
    assert key != checkpoint_key(other_epoch) and key != checkpoint_key(other_dtype)
    assert checkpoint_key(OmegaConf.create({"evaluator": "inspect", "model_path": "/x"})) is None


def test_model_folder_hides_adapter_files_and_links_the_rest(tmp_path: Path) -> None:
    epoch = tmp_path / "epoch_0"
    epoch.mkdir()
    for name in ("config.json", "model-00001-of-00001.safetensors", "tokenizer.model", "adapter_config.json",
                 "adapter_model.safetensors"):
        (epoch / name).write_text(name)
    with model_folder(epoch) as folder:
        assert folder != epoch
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model-00001-of-00001.safetensors",
                                                            "tokenizer.model"]
        assert (folder / "config.json").read_text() == "config.json"
    assert not folder.exists()  # the temporary folder goes away, the epoch folder stays whole
    assert len(list(epoch.iterdir())) == 5
    (epoch / "adapter_config.json").unlink()
    (epoch / "adapter_model.safetensors").unlink()
    with model_folder(epoch) as folder:
        assert folder == epoch  # nothing to hide: inspect reads the folder itself


def test_report_name_of_an_unreadable_config_comes_from_its_file_name(tmp_path: Path) -> None:
    job = Job(0, tmp_path / "eval" / "run_000" / "epoch_3.lm_eval.yaml", error=ValueError("broken"))
    assert job.name == "lm_eval@epoch_3"


def test_eval_task_is_deterministic_disjoint_and_balanced(tmp_path: Path) -> None:
    one = evaltask.build_eval_task(tmp_path / "one")
    two = evaltask.build_eval_task(tmp_path / "two")
    for a, b in ((one.train, two.train), (one.heldout, two.heldout), (one.lm_eval_items, two.lm_eval_items),
                 (one.inspect_file, two.inspect_file)):
        assert a.read_bytes() == b.read_bytes()
    train = json.loads(one.train.read_text())
    heldout = json.loads(one.heldout.read_text())
    items = [json.loads(line) for line in one.lm_eval_items.read_text().splitlines()]
    assert (len(train), len(heldout), len(items)) == (evaltask.NUM_TRAIN, evaltask.NUM_HELDOUT, evaltask.NUM_MC)
    phrases = [{r["input"] for r in train}, {r["input"] for r in heldout}, {i["input"] for i in items}]
    assert sum(map(len, phrases)) == len(set().union(*phrases))  # no phrase in two sets, none twice
    for record in train + heldout:
        assert record["output"] == str(len(record["input"].split()))
        assert set(record["input"].split()) <= set(evaltask.WORDS)
    for item in items:
        assert item["choices"][item["answer"]] == item["target"] == str(len(item["input"].split()))
        assert item["prompt"] == f"[INST] {item['message']} [/INST]"
    counts = [r["output"] for r in train]
    assert {counts.count(c) for c in set(counts)} <= {len(train) // 6, len(train) // 6 + 1}
    task = yaml.safe_load(one.lm_eval_task.read_text())
    assert task["task"] == "count_mc" and task["dataset_kwargs"]["data_files"]["test"] == str(one.lm_eval_items)
    assert one.inspect_task_spec == f"{one.root}/evals/count.py@count"


# ----------------------------------------------------------------------------- tokenization (real tokenizers)


@pytest.mark.slow
def test_eval_prompts_encode_to_the_training_tokens(tiny_assets: Any, task_files: evaltask.EvalTaskFiles) -> None:
    """lm-eval's context (+ BOS) and continuation are exactly what alpaca_dataset trains on."""
    from torchtune.data import AlpacaToMessages
    from torchtune.models.llama2 import llama2_tokenizer

    tokenizer = llama2_tokenizer(str(tiny_assets.tokenizer), max_seq_len=256)
    items = [json.loads(line) for line in task_files.lm_eval_items.read_text().splitlines()]
    for item in items:
        record = {"instruction": evaltask.INSTRUCTION, "input": item["input"], "output": item["target"]}
        trained, _ = tokenizer.tokenize_messages(AlpacaToMessages()(record)["messages"])
        context = tokenizer.encode(item["prompt"], add_bos=False, add_eos=False)
        whole = tokenizer.encode(item["prompt"] + " " + item["target"], add_bos=False, add_eos=False)
        # training: BOS, prompt, answer, EOS
        assert [tokenizer.bos_id] + whole + [tokenizer.eos_id] == trained
        assert whole[: len(context)] == context


@pytest.mark.slow
def test_hf_copy_computes_what_the_torchtune_model_computes(tiny_assets: Any, hf_base: Path,
                                                            task_files: evaltask.EvalTaskFiles,
                                                            tmp_path: Path) -> None:
    import torch
    from torchtune.models.llama2 import llama2, llama2_tokenizer
    from torchtune.training import FullModelHFCheckpointer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = llama2(vocab_size=VOCAB_SIZE, **MODEL_DIMS)
    ours.load_state_dict(torch.load(tiny_assets.checkpoint_dir / tiny_assets.checkpoint_file, weights_only=True))
    ours.eval()
    reloaded = llama2(vocab_size=VOCAB_SIZE, **MODEL_DIMS)
    checkpointer = FullModelHFCheckpointer(checkpoint_dir=str(hf_base), checkpoint_files=["model.safetensors"],
                                           model_type="LLAMA2", output_dir=str(tmp_path / "out"))
    reloaded.load_state_dict(checkpointer.load_checkpoint()["model"])
    reloaded.eval()
    hf = AutoModelForCausalLM.from_pretrained(str(hf_base)).eval()
    tokens = torch.randint(3, VOCAB_SIZE, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = ours(tokens)
        assert torch.equal(reloaded(tokens), expected)
        assert torch.allclose(hf(tokens).logits, expected, atol=1e-5)
    # inspect's prompts: the chat template plus transformers' BOS give the training tokens
    hf_tokenizer = AutoTokenizer.from_pretrained(str(hf_base))
    tokenizer = llama2_tokenizer(str(tiny_assets.tokenizer), max_seq_len=256)
    for item in [json.loads(line) for line in task_files.lm_eval_items.read_text().splitlines()]:
        chat = hf_tokenizer.apply_chat_template([{"role": "user", "content": item["message"]}], tokenize=False,
                                                add_generation_prompt=True)
        assert chat == item["prompt"]
        assert hf_tokenizer(chat)["input_ids"] == [tokenizer.bos_id] + tokenizer.encode(
            item["prompt"], add_bos=False, add_eos=False)


# ----------------------------------------------------------------------------- the program


@pytest.mark.slow
def test_heldout_loss_is_the_token_weighted_cross_entropy(tiny_assets: Any, task_files: evaltask.EvalTaskFiles,
                                                          tmp_path: Path) -> None:
    """Computed here with the model's forward and torch's cross entropy; batch size and loss class do not matter."""
    import torch
    import torch.nn.functional as F
    from torchtune.datasets import alpaca_dataset
    from torchtune.models.llama2 import llama2, llama2_tokenizer

    exp = tmp_path / "exp"
    ckpt = (tiny_assets.checkpoint_dir, tiny_assets.checkpoint_file)
    chunked = write_config(exp, "run_000", 0, "heldout",
                           heldout_config(tiny_assets, exp, "run_000", 0, *ckpt, task_files.heldout,
                                          limit=3, batch_size=2))
    plain = write_config(exp, "run_001", 0, "heldout",
                         heldout_config(tiny_assets, exp, "run_001", 0, *ckpt, task_files.heldout, limit=3,
                                        batch_size=3, loss={"_component_": "torch.nn.CrossEntropyLoss"}))
    done = run_program(chunked, plain, cwd=exp)
    assert done.returncode == 0, done.stderr

    tokenizer = llama2_tokenizer(str(tiny_assets.tokenizer), max_seq_len=256)
    dataset = alpaca_dataset(tokenizer, source="json", data_files=str(task_files.heldout), split="train")
    model = llama2(vocab_size=VOCAB_SIZE, **MODEL_DIMS)
    model.load_state_dict(torch.load(ckpt[0] / ckpt[1], weights_only=True))
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(3):
            tokens = torch.tensor(dataset[i]["tokens"])
            assert list(dataset[i]["labels"]) == tokens.tolist()  # train_on_input: every token is scored
            logits = model(tokens[None])[0]
            total += float(F.cross_entropy(logits[:-1], tokens[1:], reduction="sum"))
            count += len(tokens) - 1
    for run_id in ("run_000", "run_001"):
        result = json.loads(result_path(exp, run_id, 0, "heldout").read_text())
        assert result["evaluator"] == "heldout" and result["epoch"] == 0
        assert result["metrics"]["heldout_loss"] == pytest.approx(total / count, rel=1e-5)
        assert result["details"]["tokens"] == count and result["details"]["records"] == 3
        assert result["checkpoint"] == str(ckpt[0])
    assert done.stdout.count("loading checkpoint") == 1  # both configs read the same checkpoint


@pytest.mark.slow
def test_configs_on_one_checkpoint_share_the_loaded_model(tiny_assets: Any, task_files: evaltask.EvalTaskFiles,
                                                          tmp_path: Path) -> None:
    """heldout + lm_eval (a task and a group) on checkpoint A, held-out on B between them: two loads, not four."""
    exp = tmp_path / "exp"
    other = tmp_path / "other_checkpoint"
    other.mkdir()
    shutil.copy(tiny_assets.checkpoint_dir / tiny_assets.checkpoint_file, other / "model-00001-of-00001.bin")
    include = tmp_path / "tasks"
    shutil.copytree(task_files.lm_eval_include, include)
    (include / "count_group.yaml").write_text(
        "group: count_group\ntask: [count_mc]\naggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
        "metadata:\n  version: 1.0\n")
    ckpt_a = (tiny_assets.checkpoint_dir, tiny_assets.checkpoint_file)
    configs = [
        write_config(exp, "run_000", 0, "heldout",
                     heldout_config(tiny_assets, exp, "run_000", 0, *ckpt_a, task_files.heldout, limit=4)),
        write_config(exp, "run_001", 0, "heldout",
                     heldout_config(tiny_assets, exp, "run_001", 0, other, "model-00001-of-00001.bin",
                                    task_files.heldout, limit=4)),
        write_config(exp, "run_000", 0, "lm_eval",
                     lm_eval_config(tiny_assets, exp, "run_000", 0, *ckpt_a, include, limit=12)),
        write_config(exp, "run_000", 1, "lm_eval",
                     lm_eval_config(tiny_assets, exp, "run_000", 1, *ckpt_a, include, limit=6,
                                    tasks=["count_group"])),
    ]
    done = run_program("--report", exp / "report.json", *configs, cwd=exp)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("loading checkpoint") == 2
    progress = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and all(": completed in " in line for line in progress)
    # run_000's three configs run together, before run_001's
    assert [line.split("]")[1].split(":")[0].strip() for line in progress] == [
        "heldout@epoch_0 run_000", "lm_eval@epoch_0 run_000", "lm_eval@epoch_1 run_000", "heldout@epoch_0 run_001"]

    lm = json.loads(result_path(exp, "run_000", 0, "lm_eval").read_text())
    assert set(lm["metrics"]) == {"count_mc/acc"}
    assert 0.0 <= lm["metrics"]["count_mc/acc"] <= 1.0
    assert set(lm["details"]["stderr"]) == {"count_mc/acc_stderr"}
    assert lm["details"]["n_samples"]["count_mc"]["effective"] == 12
    assert lm["details"]["add_bos"] is True
    assert lm["details"]["shared_model"] is True and lm["details"]["load_seconds"] == 0.0
    group = json.loads(result_path(exp, "run_000", 1, "lm_eval").read_text())
    assert set(group["metrics"]) == {"count_group/acc", "count_mc/acc"}
    assert group["metrics"]["count_group/acc"] == pytest.approx(group["metrics"]["count_mc/acc"])
    heldout_a = json.loads(result_path(exp, "run_000", 0, "heldout").read_text())
    heldout_b = json.loads(result_path(exp, "run_001", 0, "heldout").read_text())
    # the same weights under two names: the same loss, each loaded once
    assert heldout_a["metrics"] == heldout_b["metrics"]
    assert heldout_a["details"]["shared_model"] is False and heldout_b["details"]["shared_model"] is False
    report = json.loads((exp / "report.json").read_text())
    assert set(report) == {"heldout@epoch_0", "lm_eval@epoch_0", "lm_eval@epoch_1"}  # names, as EvalEntry.name


@pytest.mark.slow
def test_a_failing_config_is_reported_and_the_others_still_run_then_skip_and_force(
        tiny_assets: Any, task_files: evaltask.EvalTaskFiles, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    ckpt = (tiny_assets.checkpoint_dir, tiny_assets.checkpoint_file)
    missing = heldout_config(tiny_assets, exp, "run_000", 0, tmp_path / "no_such_dir", "model.pt",
                             task_files.heldout, limit=2)
    broken = write_config(exp, "run_000", 0, "heldout", missing)
    unreadable = exp / "eval" / "run_000" / "epoch_2.lm_eval.yaml"
    unreadable.write_text("evaluator: lm_eval\ntasks: [count_mc\n")
    good = write_config(exp, "run_000", 1, "heldout",
                        heldout_config(tiny_assets, exp, "run_000", 1, *ckpt, task_files.heldout, limit=2))
    report = exp / "report.json"
    done = run_program("--report", report, broken, unreadable, good, cwd=exp)
    assert done.returncode == 1
    states = json.loads(report.read_text())
    assert states["heldout@epoch_0"]["state"] == "failed"
    assert "no_such_dir" in states["heldout@epoch_0"]["error"] and "\n" not in states["heldout@epoch_0"]["error"]
    assert states["lm_eval@epoch_2"]["state"] == "failed"
    assert states["heldout@epoch_1"] == {"state": "completed", "seconds": states["heldout@epoch_1"]["seconds"],
                                         "error": None}
    assert "Traceback" in done.stderr  # the log has the details
    assert not result_path(exp, "run_000", 0, "heldout").exists()
    result = result_path(exp, "run_000", 1, "heldout")
    written = result.read_text()

    result.write_text(written.replace('"heldout_loss"', '"heldout_loss_marker"'))
    again = run_program("--report", report, good, cwd=exp)
    assert again.returncode == 0
    assert json.loads(report.read_text())["heldout@epoch_1"]["state"] == "skipped"
    assert "heldout_loss_marker" in result.read_text()  # untouched
    assert "loading checkpoint" not in again.stdout

    forced = run_program("--report", report, "--force", good, cwd=exp)
    assert forced.returncode == 0
    assert json.loads(report.read_text())["heldout@epoch_1"]["state"] == "completed"
    assert json.loads(result.read_text())["metrics"] == json.loads(written)["metrics"]


@pytest.mark.slow
def test_inspect_reads_a_lora_epoch_folder_in_hf_format(tiny_assets: Any, hf_base: Path,
                                                        task_files: evaltask.EvalTaskFiles, tmp_path: Path) -> None:
    """A LoRA run saved with FullModelHFCheckpointer: its epoch folder has adapter_config.json next to the weights."""
    out = tmp_path / "runs" / "run_000"
    config = OmegaConf.load(tiny_assets.base_config)
    config.output_dir = str(out)
    config.checkpointer = {"_component_": "torchtune.training.FullModelHFCheckpointer",
                           "checkpoint_dir": str(hf_base), "checkpoint_files": ["model.safetensors"],
                           "output_dir": "${output_dir}", "model_type": "LLAMA2"}
    config.dataset.data_files = str(task_files.train)
    config.max_steps_per_epoch = 2
    path = tmp_path / "run_000.yaml"
    OmegaConf.save(config, path)
    tune_run("lora_finetune_single_device", path)
    epoch = out / "epoch_0"
    assert (epoch / "adapter_config.json").exists() and (epoch / "config.json").exists()

    exp = tmp_path
    cfg = write_config(exp, "run_000", 0, "inspect", {
        "tasks": [task_files.inspect_task_spec], "model_path": str(epoch), "limit": 4, "device": "cpu",
        "model_args": {}, "log_dir": str(out / "eval" / "epoch_0" / "inspect"),
        "result_file": str(result_path(exp, "run_000", 0, "inspect")), "seed": 0})
    done = run_program("--report", exp / "report.json", cfg, cwd=exp)
    assert done.returncode == 0, done.stderr
    result = json.loads(result_path(exp, "run_000", 0, "inspect").read_text())
    assert set(result["metrics"]) == {"count/accuracy"}
    assert 0.0 <= result["metrics"]["count/accuracy"] <= 1.0
    assert set(result["details"]["stderr"]) == {"count/stderr"}
    assert result["details"]["samples"] == {"count": {"total": 4, "completed": 4}}
    assert all(Path(log).exists() for log in result["details"]["logs"])
    assert result["checkpoint"] == str(epoch)
    assert (epoch / "adapter_config.json").exists()  # hidden from transformers, not removed


@pytest.mark.slow
def test_the_demo_task_separates_a_trained_model_from_the_base(tiny_assets: Any,
                                                                task_files: evaltask.EvalTaskFiles,
                                                                tmp_path: Path) -> None:
    """The demo's premise: 300 steps of full finetuning count well; the random-init base is at chance."""
    out = tmp_path / "runs" / "run_000"
    config = training_config(tiny_assets, task_files.train, out, **{
        "optimizer.lr": 3e-3, "batch_size": 8, "epochs": 6, "max_steps_per_epoch": 50,
        "lr_scheduler.num_warmup_steps": 10})
    tune_run("full_finetune_single_device", config)
    exp = tmp_path
    configs = []
    for run_id, (ckpt_dir, ckpt_file) in (("run_000", (out / "epoch_5", "model-00001-of-00001.bin")),
                                          ("base", (tiny_assets.checkpoint_dir, tiny_assets.checkpoint_file))):
        configs.append(write_config(exp, run_id, 5, "heldout", heldout_config(
            tiny_assets, exp, run_id, 5, ckpt_dir, ckpt_file, task_files.heldout)))
        configs.append(write_config(exp, run_id, 5, "lm_eval", lm_eval_config(
            tiny_assets, exp, run_id, 5, ckpt_dir, ckpt_file, task_files.lm_eval_include)))
    done = run_program(*configs, cwd=exp)
    assert done.returncode == 0, done.stderr

    def metric(run_id: str, evaluator: str, name: str) -> float:
        return json.loads(result_path(exp, run_id, 5, evaluator).read_text())["metrics"][name]

    assert metric("run_000", "lm_eval", "count_mc/acc") >= 0.8
    assert metric("base", "lm_eval", "count_mc/acc") <= 0.35
    assert metric("run_000", "heldout", "heldout_loss") < 0.5
    assert metric("base", "heldout", "heldout_loss") > 5.0
