"""Time `torchtune-config-writer generate` against one `tune validate` process per config.

Usage (from the repository root, with the project's environment active):

    python bench/bench_generate.py                 # full run, writes bench/results.md
    python bench/bench_generate.py --repeat 1 --tune-samples 1   # quicker, noisier

What is measured, all as wall-clock time of a fresh process (what a user waits for):

* ours: `torchtune-config-writer generate EXPERIMENT -o DIR` for a 64-run and a
  1,000-run sweep of llama3_2/1B_lora_single_device (LoRA rank x learning rate x
  alpha x dropout), validation included; the median of --repeat runs. "cold" empties
  the component cache (sigcache.py) before each run, so torchtune is imported;
  "warm" keeps what an earlier run stored, as a researcher's second run would.
* per-config process: the original specification's workflow, `tune validate CONFIG`
  once per generated config. Timed on --tune-samples configs, the mean scaled
  to 64 and 1,000 configs (running 1,000 of them would take hours).
* fast paths: `ls` (torchtune is not imported), a schema mistake reported
  before anything is loaded, and `generate --no-validate` of the 1,000-run sweep.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# variables whose value counts multiply to the number of runs
SWEEPS = {
    64: {
        "model.lora_rank": [8, 16, 32, 64],
        "optimizer.lr": [1.0e-4, 2.0e-4, 3.0e-4, 5.0e-4],
        "model.lora_alpha": [16, 32],
        "model.lora_dropout": [0.0, 0.05],
    },
    1000: {
        "model.lora_rank": [4, 8, 16, 32, 64],
        "optimizer.lr": [1.0e-5, 2.0e-5, 5.0e-5, 1.0e-4, 2.0e-4, 3.0e-4, 5.0e-4, 1.0e-3, 2.0e-3, 5.0e-3],
        "model.lora_alpha": [8, 16, 32, 64],
        "model.lora_dropout": [0.0, 0.05, 0.1, 0.2, 0.3],
    },
}
GOAL_SPEEDUP_64 = 50.0
GOAL_SECONDS_1000 = 20.0


def cli() -> list[str]:
    script = BIN / "torchtune-config-writer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torchtune_config_writer"]


def tune() -> list[str]:
    script = BIN / "tune"
    if not script.exists():
        sys.exit(f"`tune` not found next to {sys.executable}; activate the environment torchtune is installed in")
    return [str(script)]


def experiment_text(runs: int, data_files: bool = True) -> str:
    """The benchmark experiment. ``dataset.data_files`` is not in the base config: accepting it asks the
    dataset builder's signature, which imports torchtune even without validation."""
    lines = [
        f"experiment_name: bench_{runs}",
        "base_config: llama3_2/1B_lora_single_device",
        "variables:",
    ]
    lines += [f"  {key}: [{', '.join(repr(v) for v in values)}]" for key, values in SWEEPS[runs].items()]
    lines += ["controls:", "  epochs: 1"] + (["  dataset.data_files: /data/train.json"] if data_files else []) + [""]
    return "\n".join(lines)


def timed(cmd: list[str], cwd: Path, expect_ok: bool = True) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if (proc.returncode == 0) != expect_ok:
        sys.exit(f"unexpected exit code {proc.returncode} from {' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def median_of(repeat: int, fn) -> tuple[float, list[float]]:
    samples = [fn() for _ in range(repeat)]
    return statistics.median(samples), samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each of our commands (median reported)")
    ap.add_argument("--tune-samples", type=int, default=3, help="configs to time `tune validate` on")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md", help="where to write the table")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tcw_bench_"))
    try:
        rows, fast, tune_samples = run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(rows, fast, tune_samples, args, (load_before, os.getloadavg()[0]))
    print(report)
    args.out.write_text(report)
    print(f"wrote {args.out}")


def run(work: Path, args):
    for runs in SWEEPS:
        (work / f"exp_{runs}.yaml").write_text(experiment_text(runs))
    (work / "exp_1000_plain.yaml").write_text(experiment_text(1000, data_files=False))
    (work / "schema_error.yaml").write_text(
        "experiment_name: bench\nbase_config: llama3_2/1B_lora_single_device\ncontrol:\n  epochs: 2\n"
    )
    counter = iter(range(10_000))
    cache = work / "component_cache"
    os.environ["TORCHTUNE_CONFIG_WRITER_CACHE"] = str(cache)  # inherited by every command below

    def generate(runs: int | str, *extra: str) -> float:
        out = work / f"out_{next(counter)}"
        t = timed(cli() + ["generate", f"exp_{runs}.yaml", "-o", str(out), *extra], work)
        shutil.rmtree(out, ignore_errors=True)
        return t

    # warm the file cache (and Python's bytecode cache) once, so the first sample is not an outlier
    generate(64)

    def generate_cold(runs: int) -> float:
        shutil.rmtree(cache, ignore_errors=True)
        return generate(runs)

    cold, warm = {}, {}
    for runs in SWEEPS:
        cold[runs] = median_of(args.repeat, lambda runs=runs: generate_cold(runs))
        generate(runs)  # fills the cache
        warm[runs] = median_of(args.repeat, lambda runs=runs: generate(runs))
        for label, got in (("cold", cold), ("warm", warm)):
            print(f"generate {runs:>5} runs, {label}: {got[runs][0]:.2f} s  (samples {', '.join(f'{s:.2f}' for s in got[runs][1])})")

    # the specification's workflow: `tune validate` once per generated config
    keep = work / "configs_64"
    timed(cli() + ["generate", "exp_64.yaml", "-o", str(keep)], work)
    configs = sorted((keep / "configs").glob("run_*.yaml"))[: args.tune_samples]
    tune_samples = [timed(tune() + ["validate", str(c)], work) for c in configs]
    per_config = statistics.mean(tune_samples)
    print(f"tune validate, one config: {per_config:.2f} s  (samples {', '.join(f'{s:.2f}' for s in tune_samples)})")

    rows = [(runs, cold[runs][0], warm[runs][0], per_config * runs) for runs in SWEEPS]

    fast = {
        "`ls` (registry read, no torchtune import)": median_of(args.repeat, lambda: timed(cli() + ["ls"], work))[0],
        "`validate` of a file with a schema mistake": median_of(
            args.repeat, lambda: timed(cli() + ["validate", "schema_error.yaml"], work, expect_ok=False))[0],
        "`validate`, 64 runs, warm: every check and the memory estimate, nothing written": median_of(
            args.repeat, lambda: timed(cli() + ["validate", "exp_64.yaml"], work))[0],
        "`generate --no-validate`, 1,000 runs, every key in the base": median_of(
            args.repeat, lambda: generate("1000_plain", "--no-validate"))[0],
        "`python -c 'import torchtune'` (for scale)": median_of(
            args.repeat, lambda: timed([sys.executable, "-c", "import torchtune"], work))[0],
    }
    for what, seconds in fast.items():
        print(f"{what}: {seconds:.2f} s")
    return rows, fast, tune_samples


def render(rows, fast, tune_samples, args, load) -> str:
    import torch
    import torchtune

    lines = [
        "# Benchmark: generate vs one `tune validate` process per config",
        "",
        f"Measured {datetime.now().strftime('%Y-%m-%d %H:%M')} with `python bench/bench_generate.py"
        f" --repeat {args.repeat} --tune-samples {args.tune_samples}` on {platform.node() or 'this machine'}:"
        f" {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__},"
        f" torchtune {torchtune.__version__}; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after"
        " (other work on the machine inflates every figure).",
        "",
        "Base config llama3_2/1B_lora_single_device; variables LoRA rank x learning rate x alpha x dropout.",
        "\"ours\" is the whole `torchtune-config-writer generate` command (parse, merge, render, validate every",
        f"config, write the directory), median of {args.repeat}: \"cold\" with an empty component cache (torchtune is",
        "imported), \"warm\" with the cache an earlier run left (torchtune is not imported at all).",
        "\"per-config process\" is `tune validate` run once per",
        f"config, as the original specification proposed: the mean of {len(tune_samples)} measured configs"
        f" ({', '.join(f'{s:.2f}' for s in tune_samples)} s) times the number of runs.",
        "",
        "| runs | ours, cold (s) | ours, warm (s) | per-config process (s) | speedup cold | speedup warm |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for runs, ours, ours_warm, theirs in rows:
        lines.append(f"| {runs:,} | {ours:.2f} | {ours_warm:.2f} | {theirs:,.0f} | {theirs / ours:,.0f}x | {theirs / ours_warm:,.0f}x |")
    speed64 = next(theirs / ours for runs, ours, _, theirs in rows if runs == 64)
    secs1000 = next(ours for runs, ours, _, _ in rows if runs == 1000)
    lines += [
        "",
        f"Goals, judged on the cold figures: at least {GOAL_SPEEDUP_64:.0f}x faster at 64 runs: {'met' if speed64 >= GOAL_SPEEDUP_64 else 'MISSED'}"
        f" ({speed64:,.0f}x); 1,000 runs under {GOAL_SECONDS_1000:.0f} s:"
        f" {'met' if secs1000 < GOAL_SECONDS_1000 else 'MISSED'} ({secs1000:.2f} s).",
        "",
        "Paths that never import torchtune, and the import itself for scale (median wall time). A warm `validate`",
        "runs every check from the component cache. `--no-validate`",
        "stays torchtune-free only while every key is in the base config: a key accepted because a component",
        "takes it (the tables above use `dataset.data_files`) imports the component.",
        "",
        "| command | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {what} | {seconds:.2f} |" for what, seconds in fast.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
