"""Time the evaluation program: N checkpoints in one process, against one process per checkpoint or per config.

Usage (from the repository root, with the project's environment active):

    python bench/bench_evaluate.py                     # 4 checkpoints, median of 3
    python bench/bench_evaluate.py --checkpoints 8 --repeat 1

Each checkpoint (a copy of the tiny demo model in its own folder, so that none
is shared) gets two configs: the held-out loss over the demo's 60 held-out
records and lm-eval's count_mc (80 multiple-choice items, 480 requests). The
wall time of every process is what a run's evaluation job waits for; the
"compute" column adds up the ``seconds`` the result files record (the
evaluations themselves, loading and imports excluded).

    mode                       processes   wall s (median)   s per checkpoint   compute s
    one process, all configs           1              ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torchtune_config_writer.demo.assets import (
    MODEL_DIMS,
    VOCAB_SIZE,
    build_tiny_assets,
)
from torchtune_config_writer.demo.evaltask import build_eval_task


def write_configs(work: Path, n: int) -> list[list[Path]]:
    """``n`` checkpoints, each with a heldout and an lm_eval config; returns the configs per checkpoint."""
    assets = build_tiny_assets(work / "assets")
    task = build_eval_task(work / "task")
    groups = []
    for i in range(n):
        run = f"run_{i:03d}"
        ckpt = work / "runs" / run / "epoch_0"
        ckpt.mkdir(parents=True, exist_ok=True)
        shutil.copy(assets.checkpoint_dir / assets.checkpoint_file, ckpt / "model-00001-of-00001.bin")
        out = work / "runs" / run / "eval" / "epoch_0"
        common = {
            "run_id": run, "epoch": 0, "device": "cpu", "dtype": "fp32", "seed": 0,
            "model": {"_component_": "torchtune.models.llama2.llama2", "vocab_size": VOCAB_SIZE, **MODEL_DIMS},
            "tokenizer": {"_component_": "torchtune.models.llama2.llama2_tokenizer", "path": str(assets.tokenizer),
                          "max_seq_len": MODEL_DIMS["max_seq_len"]},
            "checkpointer": {"_component_": "torchtune.training.FullModelTorchTuneCheckpointer",
                             "checkpoint_dir": str(ckpt), "checkpoint_files": ["model-00001-of-00001.bin"],
                             "output_dir": str(out), "model_type": "LLAMA2"},
        }
        heldout = {"evaluator": "heldout", **common, "result_file": str(out / "heldout.json"),
                   "dataset": {"_component_": "torchtune.datasets.alpaca_dataset", "source": "json",
                               "data_files": str(task.heldout), "split": "train", "packed": False},
                   "loss": {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"},
                   "batch_size": 8, "limit": None}
        lm_eval = {"evaluator": "lm_eval", **common, "result_file": str(out / "lm_eval.json"),
                   "tasks": ["count_mc"], "include_path": str(task.lm_eval_include), "limit": None,
                   "batch_size": 8, "max_seq_length": MODEL_DIMS["max_seq_len"], "enable_kv_cache": True}
        paths = []
        for name, cfg in (("heldout", heldout), ("lm_eval", lm_eval)):
            path = work / "eval" / run / f"epoch_0.{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
            paths.append(path)
        groups.append(paths)
    return groups


def run(configs: list[Path], cwd: Path) -> float:
    """Wall seconds of one evaluation process over ``configs`` (always re-evaluated: --force)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torchtune_config_writer.evaluate", "--force", *map(str, configs)],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"evaluation failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return seconds


def compute_seconds(groups: list[list[Path]]) -> float:
    """The evaluations' own time, as their result files record it."""
    total = 0.0
    for paths in groups:
        for path in paths:
            total += json.loads(Path(json.loads(path.read_text())["result_file"]).read_text())["seconds"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    os.environ.setdefault("HF_HOME", str(work / "hf_home"))  # datasets writes its cache here
    try:
        groups = write_configs(work, args.checkpoints)
        n = args.checkpoints
        modes = {
            "one process, all configs": [[p for g in groups for p in g]],
            "one process per checkpoint": groups,
            "one process per config": [[p] for g in groups for p in g],
        }
        rows = []
        for name, batches in modes.items():
            walls, computes = [], []
            for _ in range(args.repeat):
                walls.append(sum(run(batch, work) for batch in batches))
                computes.append(compute_seconds(groups))
            wall = statistics.median(walls)
            rows.append((name, len(batches), wall, wall / n, statistics.median(computes)))
        print(f"{n} checkpoints x (heldout + lm_eval count_mc), median of {args.repeat}, "
              f"{os.cpu_count()} CPUs, torch threads default")
        print(f"{'mode':<28}{'processes':>10}{'wall s':>10}{'s/checkpoint':>14}{'compute s':>11}")
        for name, processes, wall, per, compute in rows:
            print(f"{name:<28}{processes:>10}{wall:>10.1f}{per:>14.2f}{compute:>11.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
