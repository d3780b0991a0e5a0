"""Time `generate --no-validate`, `status` and `collect` on large experiments, for one or more code versions.

Usage (from anywhere, with the project's environment):

    python bench/bench_status_collect.py                                   # the installed package
    python bench/bench_status_collect.py --code before=/tmp/before --code after=.   # side by side
    python bench/bench_status_collect.py --runs 1000 --repeat 1            # quicker, noisier
    # a version from before omegaconf was pinned to 2.3.0 needs 2.4 (an unpacked wheel in /tmp/oc24):
    python bench/bench_status_collect.py --code before=/tmp/before --extra-path before=/tmp/oc24 --code after=.

What is measured, all as wall-clock time of a fresh `python -m torchtune_config_writer` process,
for an experiment of N runs (--runs, default 1,000 and 10,000) on the package's tiny CPU example
(tiny_lora_cpu.yaml, built once by `python -m torchtune_config_writer.demo.assets`) with `optimizer.lr`
taking N distinct values, no run started:

* `generate --no-validate EXPERIMENT -o DIR` (torchtune is not imported: every key is in the base);
* `status DIR --no-slurm` and `status DIR`;
* `collect DIR`.

Each command runs --repeat times (default 3) and the median is reported. Each version generates its
own directory, since versions may write different formats. `--code NAME=PATH` (repeatable) puts the
checkout PATH first on PYTHONPATH, so PATH/torchtune_config_writer/ is the package measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_generate import median_of

COLUMNS = ("generate --no-validate", "status --no-slurm", "status", "collect")


def parse_code(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {spec!r}")
    root = Path(path).expanduser().resolve()
    if not (root / "torchtune_config_writer" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{root} has no torchtune_config_writer/ package")
    return name, root


def version_env(root: Path | None, extra: list[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), *extra, env.get("PYTHONPATH")]))
    return env


def timed(args: list[str], env: dict[str, str], cwd: Path, module: str = "torchtune_config_writer") -> float:
    """Wall time of `python -m MODULE ARGS`; exits with its output if it fails."""
    cmd = [sys.executable, "-m", module, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"exit code {proc.returncode} from {' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr}")
    return elapsed


def check_package(name: str, root: Path | None, env: dict[str, str], cwd: Path) -> None:
    """Make sure the subprocesses import the intended checkout (an editable install could shadow it)."""
    code = "import torchtune_config_writer as t; print(t.__file__)"
    found = Path(subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True,
                                capture_output=True, text=True).stdout.strip()).resolve()
    if root is not None and not found.is_relative_to(root):
        sys.exit(f"version {name}: torchtune_config_writer imports from {found}, not from {root}")
    print(f"version {name}: {found.parent}")


def experiment_text(runs: int) -> str:
    # lr values in a form every YAML loader reads as floats (a dot and a signed exponent)
    lrs = ", ".join(f"{(i + 1) * 1e-7:.6e}" for i in range(runs))
    return "\n".join([
        f"experiment_name: bench_status_{runs}",
        "base_config_file: tiny_lora_cpu.yaml",
        "recipe: lora_finetune_single_device",
        "variables:",
        f"  optimizer.lr: [{lrs}]",
        "controls:",
        "  max_steps_per_epoch: 20",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1000,10000", help="comma-separated experiment sizes")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (median reported)")
    ap.add_argument("--code", type=parse_code, action="append", default=[], metavar="NAME=PATH",
                    help="a source checkout to measure (repeatable); default: the installed package")
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    ap.add_argument("--extra-path", action="append", default=[], metavar="NAME=DIR",
                    help="also put DIR on version NAME's PYTHONPATH, after its checkout (e.g. an older "
                         "version's own dependency pins, unpacked wheels)")
    args = ap.parse_args()
    sizes = [int(n) for n in args.runs.split(",") if n.strip()]
    versions: list[tuple[str, Path | None]] = args.code or [("installed", None)]
    if len({name for name, _ in versions}) < len(versions):
        ap.error("each --code needs its own NAME")

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tcw_bench_status_"))
    try:
        extra: dict[str, list[str]] = {}
        for spec in args.extra_path:
            name, _, path = spec.partition("=")
            extra.setdefault(name, []).append(str(Path(path).resolve()))
        rows = run(work, sizes, versions, args.repeat, extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    lines = [f"{os.cpu_count()} CPU cores; 1-minute load average {load_before:.1f} before, {load_after:.1f} after"
             f" (other work on the machine inflates every figure). Median of {args.repeat}, seconds, no run started.",
             "", "| runs | version | " + " | ".join(COLUMNS) + " |", "|---:|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {runs:,} | {name} | " + " | ".join(f"{s:.2f}" for s in seconds) + " |" for runs, name, seconds in rows]
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.write_text("# `status` and `collect` on large experiments\n\n"
                            "Written by `bench/bench_status_collect.py`.\n\n" + "\n".join(lines) + "\n")


def run(work: Path, sizes: list[int], versions: list[tuple[str, Path | None]], repeat: int,
        extra: dict[str, list[str]]) -> list[tuple[int, str, list[float]]]:
    # cwd is the temp dir: `python -m` puts the cwd first on sys.path, which would shadow --code
    envs = {name: version_env(root, extra.get(name, [])) for name, root in versions}
    for name, root in versions:
        check_package(name, root, envs[name], work)
    assets = work / "assets"
    # the assets are the same for every version: build them with this checkout's own code
    timed([str(assets)], version_env(Path(__file__).resolve().parent.parent), work,
          module="torchtune_config_writer.demo.assets")

    rows = []
    for runs in sizes:
        experiment = assets / f"exp_{runs}.yaml"  # next to tiny_lora_cpu.yaml, which it names relatively
        experiment.write_text(experiment_text(runs))
        for name, _ in versions:
            env, out = envs[name], work / f"out_{name}_{runs}"

            def generate() -> float:
                shutil.rmtree(out, ignore_errors=True)
                return timed(["generate", "--no-validate", str(experiment), "-o", str(out)], env, work)

            seconds = [median_of(repeat, generate)[0]]
            for cmd in (["status", str(out), "--no-slurm"], ["status", str(out)], ["collect", str(out)]):
                seconds.append(median_of(repeat, lambda cmd=cmd: timed(cmd, env, work))[0])
            print(f"{runs:>6} runs, {name}: " + ", ".join(f"{c} {s:.2f} s" for c, s in zip(COLUMNS, seconds)),
                  flush=True)
            rows.append((runs, name, seconds))
            shutil.rmtree(out, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
