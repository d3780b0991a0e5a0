"""Time a 10,000-run experiment written with the experiment language against a plain 10,000-run grid.

Usage (from the repository root, with the project's environment active):

    python bench/bench_language.py                 # about 6 minutes on 2 cores; writes bench/results_language.md
    python bench/bench_language.py --repeat 3      # quicker, noisier
    # a snapshot of a commit, unaffected by edits in the working tree:
    mkdir /tmp/head && git archive HEAD torchtune_config_writer | tar -x -C /tmp/head
    python bench/bench_language.py --code /tmp/head --label "HEAD $(git rev-parse --short HEAD)"

Two experiments on llama3_2/1B_lora_single_device, exactly 10,000 runs each (checked in
run_mapping.yaml before anything is timed):

* plain: variables only, LoRA rank x learning rate x batch size x dropout x alpha (5 x 20 x 5 x 5 x 4);
* language: variables (rank x learning rate x batch size), a zip group (dropout with weight decay),
  5 seeds, two exclude rules (a mapping and a {{ }} expression) removing 500 of the 2,500
  combinations, three derived keys ({{ }} expressions, one reading a derived key and one reading the
  config) and a run_name template: 2,500 combinations, 500 excluded, 2,000 x 5 seeds = 10,000 runs.

What is measured:

* `torchtune-config-writer generate EXPERIMENT -o DIR` (validation included) and `validate EXPERIMENT`
  (everything but writing), run as `python -m torchtune_config_writer` with --code first on PYTHONPATH
  (default: this repository), wall-clock time of a fresh process, median of --repeat. The component
  cache is warm (an earlier run filled it, so torchtune is not imported), as bench_generate.py's "warm".
  The two experiments are measured alternately (plain, language, plain, language, ...) so that a change
  in the machine's load falls on both; each output directory is removed and the disk synced before the
  next command, outside the timing.
* in this process: the phases of `generate` (load + compile, and within it build_plan, where exclusion,
  run names and derived values are computed; validate; write), median of 3 each;
* a cProfile of the language experiment's compile step (load_experiment + compile_experiment): the
  top --top functions by cumulative time, the top 10 by own time, the top 10 of the language's own code.

The goal checked: the language experiment takes at most GOAL_RATIO times the plain one.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import io
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 10_000
GOAL_RATIO = 2.0
BASE = "llama3_2/1B_lora_single_device"

RANKS = [4, 8, 16, 32, 64]
LRS = [f"{(i + 1) * 5e-5:.2e}" for i in range(20)]  # 5.00e-05 ... 1.00e-03, read as floats by YAML 1.2
BATCH_SIZES = [1, 2, 4, 8, 16]
DROPOUTS = [0.0, 0.05, 0.1, 0.2, 0.3]
CONTROLS = ["controls:", "  epochs: 1", "  dataset.data_files: /data/train.json"]


def plain_experiment() -> str:
    return "\n".join([
        "experiment_name: bench_plain_10000",
        f"base_config: {BASE}",
        "variables:                                   # 5 x 20 x 5 x 5 x 4 = 10,000 runs",
        f"  lora_rank: [{', '.join(map(str, RANKS))}]",
        f"  learning_rate: [{', '.join(LRS)}]",
        f"  batch_size: [{', '.join(map(str, BATCH_SIZES))}]",
        f"  lora_dropout: [{', '.join(map(str, DROPOUTS))}]",
        "  lora_alpha: [8, 16, 32, 64]",
        *CONTROLS,
        "",
    ])


def language_experiment() -> str:
    return "\n".join([
        "experiment_name: bench_language_10000",
        f"base_config: {BASE}",
        "variables:                                   # 5 x 20 x 5 = 500",
        f"  lora_rank: [{', '.join(map(str, RANKS))}]",
        f"  learning_rate: [{', '.join(LRS)}]",
        f"  batch_size: [{', '.join(map(str, BATCH_SIZES))}]",
        "zip:                                         # x 5 = 2,500 combinations",
        f"  - lora_dropout: [{', '.join(map(str, DROPOUTS))}]",
        "    weight_decay: [0.0, 0.001, 0.01, 0.05, 0.1]",
        "seeds: [1, 2, 3, 4, 5]                       # x 5 = 12,500",
        "exclude:                                     # 200 + 300 combinations = 2,500 runs: 10,000 left",
        "  - {lora_rank: 64, batch_size: [8, 16]}",
        '  - "{{ lora_rank == 4 and lora_dropout >= 0.1 }}"',
        "derived:",
        '  lora_alpha: "{{ 2 * lora_rank }}"',
        '  gradient_accumulation_steps: "{{ 64 // batch_size }}"',
        '  max_steps_per_epoch: "{{ 10000 * epochs // (batch_size * gradient_accumulation_steps) }}"',
        'run_name: "r{{ lora_rank }}-lr{{ learning_rate }}-b{{ batch_size }}-d{{ lora_dropout }}-s{{ seed }}"',
        *CONTROLS,
        "",
    ])


EXPERIMENTS = {"plain": plain_experiment, "language": language_experiment}


def cli() -> list[str]:
    return [sys.executable, "-m", "torchtune_config_writer"]


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall time of ``cmd`` (the environment, PYTHONPATH included, is this process's); exits if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"exit code {proc.returncode} from {' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def check_directory(name: str, out: Path) -> None:
    """The experiment directory holds exactly RUNS runs (and, for the language one, what the language adds)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    mapping = yaml.load((out / "run_mapping.yaml").read_text(), Loader=loader)
    runs = mapping["runs"]
    configs = len(list((out / "configs").glob("*.yaml")))
    if len(runs) != RUNS or configs != RUNS:
        sys.exit(f"{name}: run_mapping.yaml lists {len(runs)} runs and configs/ holds {configs} files, not {RUNS}")
    if name == "language":
        names = {r.get("name") for r in runs}
        seeds = {r["parameters"].get("seed") for r in runs}
        derived = runs[0].get("derived") or {}
        if len(names) != RUNS or seeds != {1, 2, 3, 4, 5} or len(derived) != 3:
            sys.exit(f"language: expected {RUNS} distinct names, seeds 1-5 and 3 derived keys; got {len(names)} "
                     f"names, seeds {sorted(seeds)}, derived {derived}")
    print(f"{name}: run_mapping.yaml lists {len(runs):,} runs, configs/ holds {configs:,} files", flush=True)


def use_code(args) -> None:
    """Put --code first on the path of this process and of every command it starts; check it is what loads."""
    args.code = args.code.expanduser().resolve()
    if not (args.code / "torchtune_config_writer" / "__init__.py").is_file():
        sys.exit(f"{args.code} has no torchtune_config_writer/ package")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.code), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(args.code))
    code = "import torchtune_config_writer as t; print(t.__file__)"
    found = Path(subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), check=True,
                                capture_output=True, text=True).stdout.strip()).resolve()
    if not found.is_relative_to(args.code):
        sys.exit(f"torchtune_config_writer imports from {found}, not from {args.code}")
    args.label = args.label or f"{args.code} (commit {_commit(args.code)})"
    print(f"measuring {args.label}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per command and experiment (median reported)")
    ap.add_argument("--top", type=int, default=15, help="functions listed from the profile")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results_language.md", help="where to write the report")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose torchtune_config_writer/ is measured "
                    "(default: this repository's working tree)")
    ap.add_argument("--label", help="what to call --code in the report (default: its path and git commit)")
    args = ap.parse_args()
    use_code(args)

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_language_"))
    try:
        os.environ["TORCHTUNE_CONFIG_WRITER_CACHE"] = str(work / "component_cache")  # set before the package loads
        for name, text in EXPERIMENTS.items():
            (work / f"{name}.yaml").write_text(text())
        cli_times = run_cli(work, args.repeat)
        phases, counts = run_phases(work)
        profile = run_profile(work, args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(args, cli_times, phases, counts, profile, (load_before, os.getloadavg()[0]))
    print(report)
    args.out.write_text(report)
    print(f"wrote {args.out}")


def run_cli(work: Path, repeat: int) -> dict[tuple[str, str], list[float]]:
    out = work / "out"

    def clean() -> None:
        shutil.rmtree(out, ignore_errors=True)
        os.sync()  # the previous run's 10,000 files are not flushed on the next one's time

    # warm-up: fills the component cache (torchtune is imported once here) and the file cache, and checks the counts
    for name in EXPERIMENTS:
        clean()
        timed(cli() + ["generate", f"{name}.yaml", "-o", str(out)], work)
        check_directory(name, out)
    clean()

    samples: dict[tuple[str, str], list[float]] = {(c, n): [] for c in ("generate", "validate") for n in EXPERIMENTS}
    for i in range(repeat):
        for command in ("generate", "validate"):
            for name in EXPERIMENTS:  # alternately: plain, language, plain, language...
                cmd = cli() + [command, f"{name}.yaml"] + (["-o", str(out)] if command == "generate" else [])
                samples[command, name].append(timed(cmd, work))
                clean()
        print(f"round {i + 1}/{repeat}: " + ", ".join(f"{c} {n} {s[-1]:.2f} s" for (c, n), s in samples.items()),
              flush=True)
    return samples


def run_phases(work: Path) -> tuple[dict[tuple[str, str], float], dict[str, object]]:
    """The phases of `generate` in this process (imports already paid), median of 3, alternately."""
    from torchtune_config_writer.compile import compiler
    from torchtune_config_writer.compile.compiler import _validate, compile_experiment
    from torchtune_config_writer.compile.schema import load_experiment
    from torchtune_config_writer.compile.writer import write_experiment_dir

    plan_seconds = []  # build_plan (exclusion, numbering, names, derived values) timed inside compile_experiment
    build_plan = compiler.build_plan

    def timed_build_plan(*a, **kw):
        start = time.perf_counter()
        try:
            return build_plan(*a, **kw)
        finally:
            plan_seconds.append(time.perf_counter() - start)

    compiler.build_plan = timed_build_plan

    if not Path(compile_experiment.__code__.co_filename).resolve().is_relative_to(Path(sys.path[0])):
        sys.exit(f"this process imported {compile_experiment.__code__.co_filename}, not the code under {sys.path[0]}")
    samples: dict[tuple[str, str], list[float]] = {}
    counts = {}
    for _ in range(3):
        for name in EXPERIMENTS:
            out = work / f"phase_{name}"
            t0 = time.perf_counter()
            result = compile_experiment(load_experiment(work / f"{name}.yaml"), out)
            t1 = time.perf_counter()
            _validate(result)
            t2 = time.perf_counter()
            write_experiment_dir(result)
            t3 = time.perf_counter()
            if not result.ok or len(result.runs) != RUNS:
                sys.exit(f"{name}: {len(result.runs)} runs, problems {result.problems[:3]}")
            counts[name] = result.counts
            for phase, seconds in (("load + compile", t1 - t0), ("of which build_plan", plan_seconds[-1]),
                                   ("validate", t2 - t1), ("write", t3 - t2)):
                samples.setdefault((phase, name), []).append(seconds)
            del result
            shutil.rmtree(out)
            os.sync()
    compiler.build_plan = build_plan
    return {k: statistics.median(v) for k, v in samples.items()}, counts


def run_profile(work: Path, top: int) -> dict[str, object]:
    """cProfile of the language experiment's compile step (the imports were paid by run_phases)."""
    from torchtune_config_writer.compile.compiler import compile_experiment
    from torchtune_config_writer.compile.schema import load_experiment

    def compile_step():
        return compile_experiment(load_experiment(work / "language.yaml"), work / "profiled")

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(compile_step)
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append((ct, tt, nc, cc, f"{_short(file)}:{line}({func})" if line else func))
    by_cum = sorted(rows, key=lambda r: r[0], reverse=True)[:top]
    by_own = sorted(rows, key=lambda r: r[1], reverse=True)[:10]
    language = [r for r in rows if r[4].startswith(LANGUAGE_CODE)]
    by_language = sorted(language, key=lambda r: r[0], reverse=True)[:10]
    return {"total": total, "cumulative": by_cum, "own": by_own, "language": by_language}


LANGUAGE_CODE = ("torchtune_config_writer/compile/plan.py", "torchtune_config_writer/compile/expressions.py",
                 "torchtune_config_writer/compile/sweep.py", "jinja2/")


def _short(file: str) -> str:
    for marker in ("torchtune_config_writer/", "site-packages/"):
        if marker in file:
            return ("" if marker == "site-packages/" else marker) + file.split(marker, 1)[1]
    return Path(file).name if file.startswith("/") else file


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit(code: Path) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "torchtune_config_writer"],
                               cwd=code, capture_output=True, text=True, check=False).stdout.strip()
        return head + (" with uncommitted changes to the package" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(args, cli_times, phases, counts, profile, load) -> str:
    med = {k: statistics.median(v) for k, v in cli_times.items()}
    lines = [
        "# Benchmark: the experiment language at 10,000 runs",
        "",
        (f"Measured {datetime.now().strftime('%Y-%m-%d %H:%M')} with `python bench/bench_language.py --repeat {args.repeat}"
         f"{' --code DIR' if args.code != ROOT else ''}`"
         f" on {platform.node() or 'this machine'}: {os.cpu_count()} CPU cores, Python {platform.python_version()},"
         f" torchtune_config_writer {args.label}, jinja2 {_version('jinja2')},"
         f" torch {_version('torch')}, torchtune {_version('torchtune')}; 1-minute load average {load[0]:.1f} before,"
         f" {load[1]:.1f} after (other work on the machine inflates every figure)."),
        "",
        f"Two experiments on {BASE}, {RUNS:,} runs each (counted in run_mapping.yaml before timing):",
        "\"plain\" sweeps five variables (5 x 20 x 5 x 5 x 4); \"language\" has three variables, a zip group,",
        "5 seeds, two exclude rules (a mapping and an expression), three derived `{{ }}` keys and a run_name",
        f"template ({counts['language'].summary()}). Both files are at the end of this report.",
        "",
        "## Fresh processes",
        "",
        f"Wall-clock time of a fresh process, median of {args.repeat}, the two experiments measured alternately;",
        "component cache warm (torchtune is not imported). `generate` validates and writes the directory;",
        "`validate` does everything but writing.",
        "",
        "| command | plain (s) | language (s) | language / plain |",
        "|---|---:|---:|---:|",
    ]
    for command in ("generate", "validate"):
        plain, lang = med[command, "plain"], med[command, "language"]
        lines.append(f"| `{command}` | {plain:.2f} | {lang:.2f} | {lang / plain:.2f}x |")
    lines += ["", "Samples, in the order taken:", ""]
    for (command, name), samples in cli_times.items():
        lines.append(f"- `{command}` {name}: {', '.join(f'{s:.2f}' for s in samples)}")
    ratio = med["generate", "language"] / med["generate", "plain"]
    lines += [
        "",
        (f"Goal: `generate` of the language experiment within {GOAL_RATIO:.0f}x of the plain grid:"
         f" {'met' if ratio <= GOAL_RATIO else 'MISSED'} ({ratio:.2f}x)."),
        "",
        "## Where the time goes",
        "",
        "The phases of `generate` run in one process (imports already paid), median of 3, alternately: fewer",
        "samples than above, so noisier, the write phase most of all (it depends on the disk). build_plan is the",
        "part of compiling the language adds to: combinations, exclusion, numbering, run names and derived values",
        "(the `{{ }}` expressions).",
        "",
        "| phase | plain (s) | language (s) | language / plain |",
        "|---|---:|---:|---:|",
    ]
    for phase in ("load + compile", "of which build_plan", "validate", "write"):
        plain, lang = phases[phase, "plain"], phases[phase, "language"]
        lines.append(f"| {phase} | {plain:.2f} | {lang:.2f} | {lang / plain:.2f}x |")
    lines += [
        "",
        "cProfile of the language experiment's compile step (`load_experiment` + `compile_experiment`, no",
        (f"validation, nothing written): {profile['total']:.2f} s under the profiler. Top {len(profile['cumulative'])}"
         " functions by cumulative time:"),
        "",
        "| function | calls | own (s) | cumulative (s) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| `{where}` | {_calls(nc, cc)} | {tt:.2f} | {ct:.2f} |" for ct, tt, nc, cc, where in profile["cumulative"]]
    lines += ["", "Top 10 by own time:", "", "| function | calls | own (s) | cumulative (s) |", "|---|---:|---:|---:|"]
    lines += [f"| `{where}` | {_calls(nc, cc)} | {tt:.2f} | {ct:.2f} |" for ct, tt, nc, cc, where in profile["own"]]
    lines += ["", "The language's own code (plan.py, expressions.py, sweep.py and jinja2), top 10 by cumulative time:",
              "", "| function | calls | own (s) | cumulative (s) |", "|---|---:|---:|---:|"]
    lines += [f"| `{where}` | {_calls(nc, cc)} | {tt:.2f} | {ct:.2f} |" for ct, tt, nc, cc, where in profile["language"]]
    lines += ["", "## The experiments", ""]
    for name, text in EXPERIMENTS.items():
        lines += [f"{name}.yaml:", "", "```yaml", text().rstrip(), "```", ""]
    return "\n".join(lines)


def _calls(nc: int, cc: int) -> str:
    return f"{nc:,}" if nc == cc else f"{nc:,}/{cc:,}"


if __name__ == "__main__":
    main()
