"""Evaluation configs: one per (run, epoch, evaluator), derived from the run's own config.

``plan_evaluations`` turns the experiment's ``evaluation:`` section into, for
every run, the configs of its evaluations (``eval/run_000/epoch_0.heldout.yaml``)
and the problems that would make them fail after training: adapter-only
checkpoints, an epoch the run never saves, inspect-ai on weights that are not
in Hugging Face format, a task file or task function that is not there. The
configs reuse the run's tokenizer, checkpointer class, dataset and loss
components; the model is the run's builder with LoRA taken out, because a LoRA
run saves its merged weights in ``epoch_N/`` and those load strictly into the
plain model. Every config is checked like a training config (``validate``).

    >>> plans, problems = plan_evaluations(result, check_except=set())   # doctest: +SKIP
    >>> plans["run_000"][0].entry.config                    # doctest: +SKIP
    'eval/run_000/epoch_0.heldout.yaml'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExperimentSchemaError, did_you_mean
from ..expdir import EvalEntry, Evaluator, eval_config_file, eval_result_file
from .validate import Problem, check_config

if TYPE_CHECKING:
    from .compiler import GenerationResult, RunResult
    from .schema import EvaluationSettings, Experiment

#: Arguments of LoRA/QLoRA builders that their plain counterparts do not take.
LORA_ARGS = ("lora_attn_modules", "apply_lora_to_mlp", "apply_lora_to_output", "lora_rank", "lora_alpha",
             "lora_dropout", "use_dora", "quantize_base")
_HF = "torchtune.training.FullModelHFCheckpointer"
#: What each checkpointer class saves per epoch (torchtune 0.6.1): one shard file per input file for HF,
#: one ``model-00001-of-00001.bin`` for torchtune's and Meta's formats.
_SINGLE_FILE_CHECKPOINTERS = ("torchtune.training.FullModelTorchTuneCheckpointer",
                              "torchtune.training.FullModelMetaCheckpointer")
_DATA_SOURCES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text", ".parquet": "parquet"}


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation of one run: its run_mapping entry (sha256 filled in when written) and its config."""

    entry: EvalEntry
    config: dict[str, Any]

    @property
    def text(self) -> str:
        from .yamlio import dump_plain

        head = (f"# Evaluation of {self.config['run_id']} at epoch {self.entry.epoch}: {self.entry.evaluator}\n"
                "# Written by torchtune_config_writer; run by `run` after training (or `run --eval-only`):\n"
                f"#   python -m torchtune_config_writer.evaluate {self.entry.config}\n\n")
        return head + dump_plain(self.config)


def plan_evaluations(result: GenerationResult,
                     check_except: set[str] | None) -> tuple[dict[str, list[EvalConfig]], list[Problem]]:
    """Every run's evaluation configs (run id -> configs) and every problem found in them.

    The configs are checked like training configs, except those of the runs in ``check_except``
    (runs whose training config already failed); ``None`` checks none (``--no-validate``).
    """
    exp = result.experiment
    settings = exp.evaluation
    if settings is None:
        return {}, []
    shared, problems = _shared_inputs(exp, settings)
    plans: dict[str, list[EvalConfig]] = {}
    for run in result.runs:
        configs, found = _run_evaluations(run, settings, shared)
        plans[run.run_id] = configs
        problems += found
        if check_except is not None and run.run_id not in check_except and not found:
            problems += _check(run.run_id, configs)
    return plans, problems


# ----------------------------------------------------------------------------- inputs shared by every run


@dataclass(frozen=True)
class _Shared:
    heldout_files: str | None
    include_path: str | None
    inspect_tasks: tuple[str, ...]


def _shared_inputs(exp: Experiment, settings: EvaluationSettings) -> tuple[_Shared, list[Problem]]:
    """Paths made absolute against the experiment file. What no run can get past (a task folder or file
    that is not there) is an ``ExperimentSchemaError`` at its line; likely mistakes come back as warnings."""
    problems: list[Problem] = []
    base = exp.base_dir

    def absolute(value: str) -> Path:
        return (base / Path(value).expanduser()).resolve()

    heldout = None
    if settings.heldout and settings.heldout.data_files:
        path = absolute(settings.heldout.data_files)
        heldout = str(path)
        if not path.exists():
            problems.append(Problem("all runs", "evaluation.heldout.data_files", f"'{path}' does not exist here; "
                                    "the evaluations will fail unless it exists where they run", warning=True))
    include = None
    if settings.lm_eval and settings.lm_eval.include_path:
        path = absolute(settings.lm_eval.include_path)
        include = str(path)
        if not path.is_dir():
            raise ExperimentSchemaError(f"{exp.where('evaluation.lm_eval', 'include_path')}: '{path}' is not a folder; "
                                        "give the folder that holds your task YAML files (relative to this file)")
        else:
            problems += _local_task_hints(path, settings.lm_eval.tasks)
    inspect_tasks: list[str] = []
    for spec in settings.inspect.tasks if settings.inspect else []:
        resolved, problem = _inspect_task(spec, absolute)
        inspect_tasks.append(resolved)
        if problem:
            raise ExperimentSchemaError(f"{exp.where('evaluation.inspect', 'tasks')}: {problem}")
    return _Shared(heldout, include, tuple(inspect_tasks)), problems


def _local_task_hints(folder: Path, tasks: list[str]) -> list[Problem]:
    """A task named like, but not as, a local task YAML is most likely a typo of it (a warning: it may
    still be one of lm-eval's own tasks, which are not listed here to keep torch-free commands fast)."""
    names = set()
    for path in list(folder.rglob("*.yaml")) + list(folder.rglob("*.yml")):
        try:
            names.update(re.findall(r"^(?:task|group):\s*['\"]?([\w.\-]+)", path.read_text(errors="replace"), re.M))
        except OSError:
            continue
    out = []
    for task in tasks:
        if task not in names:
            hint = did_you_mean(task, sorted(names), n=1)
            if hint:
                out.append(Problem("all runs", "evaluation.lm_eval.tasks", f"'{task}' is not a task under {folder}."
                                   f"{hint} (if it is one of lm-eval's own tasks, ignore this)", warning=True))
    return out


def _inspect_task(spec: str, absolute: Any) -> tuple[str, str | None]:
    """``file.py@task`` with the file made absolute, and what is wrong with it (None when nothing)."""
    file, _, name = spec.partition("@")
    path = absolute(file)
    resolved = f"{path}@{name}" if name else str(path)
    if not file.endswith(".py"):
        return resolved, f"'{spec}' is not file.py@task; write e.g. evals/count.py@count"
    if not path.is_file():
        return resolved, f"'{path}' does not exist; inspect task files are relative to the experiment file"
    if name:
        defined = re.findall(r"^def\s+(\w+)\s*\(", path.read_text(errors="replace"), re.M)
        if name not in defined:
            return resolved, (f"{path} defines no function '{name}'.{did_you_mean(name, defined, n=1)} "
                              "(an inspect task is a function decorated with @task)")
    return resolved, None


# ----------------------------------------------------------------------------- one run


def _run_evaluations(run: RunResult, settings: EvaluationSettings,
                     shared: _Shared) -> tuple[list[EvalConfig], list[Problem]]:
    cfg = run.plain
    rid = run.run_id
    problems = []
    epochs, why = _epochs(cfg, settings.epochs)
    if why:
        problems.append(Problem(rid, "evaluation.epochs", why))
    model, why = plain_model(cfg.get("model"))
    if why:
        problems.append(Problem(rid, "model._component_", why))
    if _is_lora(cfg) and cfg.get("save_adapter_weights_only") is True:
        problems.append(Problem(rid, "save_adapter_weights_only", (
            "evaluation loads the merged weights a LoRA run saves in epoch_N/, and this run saves adapter weights "
            "only; add save_adapter_weights_only: False to controls")))
    checkpointer = cfg.get("checkpointer") or {}
    component = str(checkpointer.get("_component_", ""))
    files, why = saved_files(checkpointer)
    if why:
        problems.append(Problem(rid, "checkpointer._component_", why))
    if settings.inspect and component != _HF:
        problems.append(Problem(rid, "checkpointer._component_", (
            f"inspect-ai loads weights in Hugging Face format, and this run saves them with {component.rsplit('.', 1)[-1]}; "
            "train from an HF-format checkpoint with torchtune.training.FullModelHFCheckpointer, or remove "
            "evaluation.inspect")))
    if problems:
        return [], problems
    out_dir = str(run.output_dir)
    common = {"run_id": rid, "device": cfg.get("device", "cuda"), "dtype": cfg.get("dtype", "bf16"),
              "seed": cfg.get("seed") if isinstance(cfg.get("seed"), int) else 0}
    configs = []
    for epoch in epochs:
        weights = {"model": model, "tokenizer": cfg.get("tokenizer"),
                   "checkpointer": _eval_checkpointer(checkpointer, files, out_dir, epoch)}
        if settings.heldout:
            h = settings.heldout
            configs.append(_config(rid, epoch, Evaluator.HELDOUT, out_dir, {
                **common, **weights, "dataset": _heldout_dataset(cfg.get("dataset"), h, shared.heldout_files),
                "loss": cfg.get("loss"), "batch_size": h.batch_size, "limit": h.limit}))
        if settings.lm_eval:
            e = settings.lm_eval
            configs.append(_config(rid, epoch, Evaluator.LM_EVAL, out_dir, {
                **common, **weights, "tasks": list(e.tasks), "include_path": shared.include_path,
                "limit": e.limit, "batch_size": e.batch_size,
                "max_seq_length": e.max_seq_length or _max_seq_len(cfg), "enable_kv_cache": e.enable_kv_cache}))
        if settings.inspect:
            i = settings.inspect
            configs.append(_config(rid, epoch, Evaluator.INSPECT, out_dir, {
                **common, "tasks": list(shared.inspect_tasks), "model_path": f"{out_dir}/epoch_{epoch}",
                "limit": i.limit, "model_args": dict(i.model_args),
                "log_dir": f"{out_dir}/eval/epoch_{epoch}/inspect"}))
    return configs, []


def _config(rid: str, epoch: int, evaluator: Evaluator, output_dir: str, body: dict[str, Any]) -> EvalConfig:
    result = eval_result_file(output_dir, epoch, evaluator.value)
    entry = EvalEntry(evaluator, epoch, eval_config_file(rid, epoch, evaluator.value), result)
    return EvalConfig(entry, {"evaluator": evaluator.value, "epoch": epoch, "result_file": result, **body})


def _epochs(cfg: dict, wanted: Any) -> tuple[list[int], str | None]:
    total = cfg.get("epochs", 1)
    if not isinstance(total, int) or total < 1:
        return [], None  # the training checks report a bad epochs value
    if wanted == "last":
        return [total - 1], None
    if wanted == "all":
        return list(range(total)), None
    beyond = [e for e in wanted if e >= total]
    if beyond:
        return [], (f"lists epoch {beyond[0]}, but this run trains {total} epoch(s), saving "
                    + ", ".join(f"epoch_{e}" for e in range(min(total, 3))) + (", ..." if total > 3 else "")
                    + "; epochs count from 0 (use last or all to follow each run's epochs)")
    return sorted(wanted), None


def _is_lora(cfg: dict) -> bool:
    model = cfg.get("model")
    leaf = str(model.get("_component_", "")).rsplit(".", 1)[-1] if isinstance(model, dict) else ""
    return leaf.startswith(("lora_", "qlora_"))


def plain_model(model: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The run's model section with LoRA taken out: ``lora_llama2`` -> ``llama2`` without the LoRA arguments.

    >>> plain_model({"_component_": "torchtune.models.llama2.lora_llama2", "lora_rank": 8, "num_layers": 2})
    ({'_component_': 'torchtune.models.llama2.llama2', 'num_layers': 2}, None)
    """
    if not isinstance(model, dict) or "_component_" not in model:
        return None, "the run has no model component to evaluate"
    module, _, leaf = str(model["_component_"]).rpartition(".")
    if not leaf.startswith(("lora_", "qlora_")):
        return dict(model), None
    plain = f"{module}.{leaf.split('_', 1)[1]}"
    return {"_component_": plain, **{k: v for k, v in model.items() if k != "_component_" and k not in LORA_ARGS}}, None


def saved_files(checkpointer: dict) -> tuple[list[str], str | None]:
    """The weight files the run's checkpointer writes into each ``epoch_N/`` (torchtune 0.6.1's names)."""
    component = str(checkpointer.get("_component_", ""))
    if component in _SINGLE_FILE_CHECKPOINTERS:
        return ["model-00001-of-00001.bin"], None
    if component == _HF:
        inputs = checkpointer.get("checkpoint_files")
        if isinstance(inputs, dict) and str(inputs.get("max_filename", "")).isdigit():
            shards = int(inputs["max_filename"])
        elif isinstance(inputs, list) and inputs:
            shards = len(inputs)
        else:
            return [], "cannot tell how many weight files the run saves from checkpointer.checkpoint_files"
        suffix = ".safetensors" if checkpointer.get("safe_serialization", True) else ".bin"
        return [f"model-{i:05d}-of-{shards:05d}{suffix}" for i in range(1, shards + 1)], None
    return [], (f"evaluation loads epoch checkpoints saved by FullModelHFCheckpointer, FullModelTorchTuneCheckpointer "
                f"or FullModelMetaCheckpointer; this run uses {component or 'no checkpointer'}")


def _eval_checkpointer(checkpointer: dict, files: list[str], output_dir: str, epoch: int) -> dict[str, Any]:
    keep = {k: v for k, v in checkpointer.items() if k in ("_component_", "model_type", "safe_serialization")}
    return {**keep, "checkpoint_dir": f"{output_dir}/epoch_{epoch}", "checkpoint_files": files,
            "recipe_checkpoint": None, "output_dir": f"{output_dir}/eval/epoch_{epoch}"}


def _heldout_dataset(dataset: Any, settings: Any, data_files: str | None) -> Any:
    if settings.dataset is not None:
        return dict(settings.dataset)
    node = dict(dataset) if isinstance(dataset, dict) else {}
    node["data_files"] = data_files
    source = _DATA_SOURCES.get(Path(str(data_files)).suffix.lower())
    if source:
        node["source"] = source
    if settings.split:
        node["split"] = settings.split
    node["packed"] = False  # packing splices records together: every record is scored on its own
    return node


def _max_seq_len(cfg: dict) -> int:
    for section in ("tokenizer", "model"):
        node = cfg.get(section)
        if isinstance(node, dict) and isinstance(node.get("max_seq_len"), int):
            return node["max_seq_len"]
    return 4096


# ----------------------------------------------------------------------------- checks


#: Keys of an evaluation config that are the evaluator's own, not torchtune components or settings.
_OWN_KEYS = ("evaluator", "epoch", "result_file", "run_id", "limit", "tasks", "include_path", "max_seq_length",
             "enable_kv_cache", "model_path", "model_args", "log_dir")


def _check(rid: str, configs: list[EvalConfig]) -> list[Problem]:
    """The training checks on what an evaluation config changed (the model, the held-out dataset); one
    configuration per evaluator, since every epoch's config differs only in paths."""
    problems, seen = [], set()
    for ev in configs:
        if ev.entry.evaluator == Evaluator.INSPECT or ev.entry.evaluator in seen:
            continue
        seen.add(ev.entry.evaluator)
        body = {k: v for k, v in ev.config.items() if k not in _OWN_KEYS}
        # a full recipe passes the dataset its tokenizer and takes the plain model the merged weights load into
        checked_recipe = "full_finetune_single_device" if ev.entry.evaluator == Evaluator.HELDOUT else "eleuther_eval"
        for f in check_config(body, checked_recipe):
            if f.key.split(".")[0] in ("model", "dataset"):
                problems.append(Problem(rid, f"{ev.entry.config}: {f.key}", f.message, f.warning))
    return problems
