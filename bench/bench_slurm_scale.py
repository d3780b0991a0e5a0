"""Time `submit`, `status` and `collect` of a 10,000-run experiment on a real local SLURM, beside `generate`.

Usage (from the repository root, with the project's environment; SLURM installed by .ci/install_slurm.sh):

    python bench/bench_slurm_scale.py                        # about 5 minutes on 2 cores
    python bench/bench_slurm_scale.py --repeat 1             # quicker, noisier
    python bench/bench_slurm_scale.py --profile              # also the top functions of each command (cProfile)
    # an older version beside this one (its own directories, same cluster):
    mkdir /tmp/before && git archive <commit> torchtune_config_writer | tar -x -C /tmp/before
    python bench/bench_slurm_scale.py --code before=/tmp/before --code after=.

The experiment: a 100 x 100 grid (optimizer.lr x optimizer.weight_decay) on the package's tiny CPU
example (tiny_lora_cpu.yaml, built by `python -m torchtune_config_writer.demo.assets`), with
``slurm.max_concurrent`` set, so that `submit` splits it into arrays of MaxArraySize tasks chained one
after the other (``--dependency=afterany``). Every figure is the wall-clock time of a fresh
`python -m torchtune_config_writer` process (the time a user waits), the median of --repeat:

* `generate --no-validate` and `generate` (validated; the component cache warm, as from the second
  generate on; the first, cold, is reported beside it). `submit` takes validated configs only, so the
  SLURM part uses the validated directory;
* `submit`: against a test cluster started here (tests/slurm_cluster.py) with MaxArraySize 1001, so the
  10,000 runs become 10 arrays. Its partition is set DOWN first: the tasks are queued (PENDING, reason
  PartitionDown) and never train. Between repetitions the arrays are cancelled and slurm_jobs.yaml
  removed; the last submission stays queued;
* `status` with the 10,000 tasks pending in squeue, and `status --no-slurm`;
* then the arrays are cancelled and every run gets what a finished task leaves: a status record naming
  its array task (completed; every 50th failed, every 97th cancelled), a SLURM log and a DiskLogger
  metric log of --steps steps. `status` (10,000 records, squeue still knowing the 10,000 tasks) and
  `collect` (results.csv, results.md, both plots) are timed on that;
* `submit (again)`: a plain `submit` of that finished sweep, which leaves out the completed runs and
  submits the failed and cancelled ones again (cancelled and forgotten between repetitions).

Each result is checked, not only timed: the arrays cover every run once and are chained, squeue holds
10,000 pending tasks, status and collect report 10,000 runs in the expected states. The cluster needs
MaxJobCount above SLURM's default of 10,000 (every queued array task counts, and cancelled ones until
MinJobAge passes); it is started with 200,000.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # slurm_cluster.py

from bench_status_collect import check_package, parse_code, version_env  # noqa: E402

GRID = 100  # GRID x GRID runs
ARRAY_SIZE = 1001
COLUMNS = ("generate --no-validate", "generate", "submit", "status (pending)", "status --no-slurm",
           "status (records)", "collect", "submit (again)")


def experiment_text(grid: int) -> str:
    lrs = ", ".join(f"{(i + 1) * 1e-5:.6e}" for i in range(grid))
    wds = ", ".join(f"{i * 1e-3:.6e}" for i in range(grid))
    return "\n".join([
        f"experiment_name: scale_{grid * grid}",
        "base_config_file: tiny_lora_cpu.yaml",
        "recipe: lora_finetune_single_device",
        "variables:",
        f"  optimizer.lr: [{lrs}]",
        f"  optimizer.weight_decay: [{wds}]",
        "controls:",
        "  max_steps_per_epoch: 2",
        "slurm:",
        "  gpus_per_run: 0",
        "  cpus_per_task: 1",
        '  time: "00:10:00"',
        "  max_concurrent: 64",  # the arrays are chained, so that at most 64 run at once across all of them
        "",
    ])


def run_cmd(args: list[str], env: dict[str, str], cwd: Path, *, ok: bool = True,
            profile: Path | None = None) -> tuple[Sample, subprocess.CompletedProcess]:
    """((wall, CPU) seconds, process) of `python -m torchtune_config_writer ARGS`; exits with its output on failure.

    CPU: user + system time of the process and of what it ran (squeue, sbatch), which other work on the
    machine inflates far less than the wall time.
    """
    cmd = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []),
           "-m", "torchtune_config_writer", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if (proc.returncode == 0) != ok:
        sys.exit(f"exit code {proc.returncode} from {' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(elapsed, cpu), proc


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


def median_sample(repeat: int, fn) -> Sample:
    """The median wall time and the median CPU time of ``repeat`` calls of ``fn`` (each returning a Sample)."""
    samples = [fn() for _ in range(repeat)]
    return Sample(statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples))


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"check failed: {what}")


# ----------------------------------------------------------------------------- the cluster side


def slurm(cluster, *args: str) -> str:
    return cluster.run(*args).stdout


def job_ids(exp: Path) -> list[str]:
    from torchtune_config_writer.expdir import read_jobs

    return [j.job_id for j in read_jobs(exp)]


def cancel_all(cluster, exp: Path) -> None:
    """scancel the experiment's arrays and wait until none of their tasks is queued any more."""
    ids = job_ids(exp)
    if not ids:
        return
    cluster.run("scancel", *ids)
    deadline = time.monotonic() + 120
    while slurm(cluster, "squeue", "-h", "-r", "-t", "PENDING,RUNNING,COMPLETING", "-j", ",".join(ids), "-o", "%i").strip():
        if time.monotonic() > deadline:
            sys.exit(f"tasks of {ids} still queued 120 s after scancel")
        time.sleep(0.5)


def read_jobs_of(exp: Path) -> list:
    from torchtune_config_writer.expdir import read_jobs

    return read_jobs(exp)


def jobs_of_text(text: str) -> list:
    import yaml

    return (yaml.safe_load(text) or {}).get("jobs") or []


def check_submission(cluster, exp: Path, runs: int) -> int:
    """The arrays cover every run once, are chained, and squeue holds every task pending; returns the arrays."""
    from torchtune_config_writer.expdir import read_jobs

    jobs = read_jobs(exp)
    covered = sorted(i for j in jobs for i in j.indices)
    check(covered == list(range(runs)), f"slurm_jobs.yaml covers {len(covered)} indices, not 0..{runs - 1} once")
    check(len(jobs) == math.ceil(runs / ARRAY_SIZE), f"{len(jobs)} arrays, expected {math.ceil(runs / ARRAY_SIZE)}")
    check(all(f"afterany:{a.job_id}" in b.command for a, b in zip(jobs, jobs[1:])), "arrays are not chained")
    pending = slurm(cluster, "squeue", "-h", "-r", "-t", "PENDING", "-j", ",".join(j.job_id for j in jobs),
                    "-o", "%i").split()
    check(len(pending) == runs, f"squeue shows {len(pending)} pending tasks, expected {runs}")
    check(not (exp / "status").exists(), "a task started (the partition should be down)")
    return len(jobs)


def write_finished_runs(exp: Path, steps: int) -> dict[str, int]:
    """What every run's SLURM task leaves when it ended: status record, SLURM log, DiskLogger metric log.

    Completed, except every 50th run failed (exit 1, half its steps) and every 97th cancelled.
    Returns the count per state.
    """
    from torchtune_config_writer.expdir import (
        State, StatusRecord, load_mapping, read_jobs, slurm_log_file, write_status,
    )

    mapping = load_mapping(exp)
    task_of = {i: (j.job_id, j.task_of(i)) for j in read_jobs(exp) for i in j.indices}
    (exp / "logs").mkdir(exist_ok=True)
    start = int(time.time()) - 7200  # the logs written below are newer: they belong to this attempt
    counts: dict[str, int] = {}
    for run in mapping.runs:
        job, task = task_of[run.index]
        state = (State.FAILED if run.index % 50 == 49 else State.CANCELLED if run.index % 97 == 96
                 else State.COMPLETED)
        counts[str(state)] = counts.get(str(state), 0) + 1
        began, wall = start + run.index % 600, 40 + run.index % 17
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))  # noqa: E731
        log = slurm_log_file(job, task)
        write_status(exp, StatusRecord(
            run.run_id, state, exit_code={State.COMPLETED: 0, State.FAILED: 1}.get(state, 143), started=iso(began),
            ended=iso(began + wall), host="node01", slurm_job_id=str(100000 + run.index),
            slurm_array_job_id=job, slurm_array_task_id=str(task), log=log))
        done = steps if state == State.COMPLETED else steps // 2
        lr = float(run.parameters["optimizer.lr"])
        lines = [f"Step {s} | loss:{6.5 * math.exp(-s * lr * 50) + 0.01 * (run.index % 7):.6f} lr:{lr * min(1, s / 2):.6g} "
                 f"tokens_per_second_per_gpu:{9000 + 37 * (s % 11) + run.index % 300:.4f} " for s in range(1, done + 1)]
        log_dir = Path(run.metric_log.dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"log_{began}.txt").write_text("\n".join(lines) + "\n")
        end = ("# completed with exit code 0" if state == State.COMPLETED else
               "Traceback (most recent call last):\nRuntimeError: data\n# failed with exit code 1"
               if state == State.FAILED else "slurmstepd: *** JOB CANCELLED ***")
        (exp / log).write_text(f"# tune run lora_finetune_single_device --config {run.config}\n"
                               f"# started {iso(began)} on node01\n" + "resolved config line\n" * 60 + end + "\n")
    return counts


# ----------------------------------------------------------------------------- measuring


def top_functions(profile: Path, n: int) -> str:
    """The package's own functions by cumulative time, then every function by own time (``n`` of each)."""
    stats = pstats.Stats(str(profile)).stats  # {(file, line, name): (calls, ncalls, own, cumulative, callers)}

    def where(key: tuple) -> str:
        file, line, name = key
        short = file.split("torchtune_config_writer/")[-1] if "torchtune_config_writer/" in file else Path(file).name
        return f"{short}:{line}({name})" if line else name

    ours = sorted(((v[3], v[2], v[1], k) for k, v in stats.items() if "torchtune_config_writer/" in k[0]
                   and k[2] != "<module>"), reverse=True)[:n]
    own = sorted(((v[2], v[3], v[1], k) for k, v in stats.items()), reverse=True)[:n]
    lines = ["cumulative  own s   calls  the package's functions by cumulative time"]
    lines += [f"{c:9.3f} {o:7.3f} {calls:7d}  {where(k)}" for c, o, calls, k in ours]
    lines += ["", "    own s  cumul   calls  every function by own time"]
    lines += [f"{o:9.3f} {c:7.3f} {calls:7d}  {where(k)}" for o, c, calls, k in own]
    return "\n".join(lines)


def measure(name: str, env: dict[str, str], work: Path, cluster, assets: Path, args) -> tuple[list[Sample], dict]:
    runs = args.grid * args.grid
    experiment = assets / f"exp_{runs}.yaml"  # next to tiny_lora_cpu.yaml, which it names relatively
    experiment.write_text(experiment_text(args.grid))
    novalid, exp = work / f"nv_{name}", work / f"v_{name}"
    extra: dict = {"profiles": {}}
    env = {**env, "TORCHTUNE_CONFIG_WRITER_CACHE": str(work / f"cache_{name}")}

    def generate(out: Path, *flags: str) -> Sample:
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(["sync"], check=False)  # the previous directory's writes are not charged to this one
        return run_cmd(["generate", *flags, str(experiment), "-o", str(out)], env, work)[0]

    samples = [median_sample(args.repeat, lambda: generate(novalid, "--no-validate"))]
    shutil.rmtree(novalid, ignore_errors=True)
    extra["generate cold"] = generate(exp)  # fills the component cache: torchtune imported
    samples.append(median_sample(args.repeat, lambda: generate(exp)))
    mapping = json.loads((exp / ".run_mapping.json").read_text())["data"]
    check(len(mapping["runs"]) == runs and all(r["validation"] == "passed" for r in mapping["runs"]),
          f"{exp}: not {runs} validated runs")

    def profile(what: str, command: list[str]) -> None:
        if args.profile:
            path = work / f"{name}_{what.replace(' ', '_')}.prof"
            run_cmd(command, env, work, profile=path)
            extra["profiles"][what] = top_functions(path, args.top)

    def submit() -> Sample:
        cancel_all(cluster, exp)
        (exp / "slurm_jobs.yaml").unlink(missing_ok=True)
        return run_cmd(["submit", str(exp)], env, work)[0]

    samples.append(median_sample(args.repeat, submit))
    extra["arrays"] = check_submission(cluster, exp, runs)
    if args.profile:
        cancel_all(cluster, exp)
        (exp / "slurm_jobs.yaml").unlink(missing_ok=True)
        profile("submit", ["submit", str(exp)])
        check_submission(cluster, exp, runs)

    def status(*flags: str, expect: str) -> Sample:
        t, proc = run_cmd(["status", str(exp), *flags], env, work)
        check(expect in proc.stdout, f"status {' '.join(flags)}: no {expect!r} in its footer:\n{proc.stdout[-500:]}")
        return t

    samples.append(median_sample(args.repeat, lambda: status(expect=f"{runs} run(s): {runs} PENDING")))
    samples.append(median_sample(args.repeat, lambda: status("--no-slurm", expect=f"{runs} run(s): {runs} pending")))
    profile("status (pending)", ["status", str(exp)])

    cancel_all(cluster, exp)
    t0 = time.perf_counter()
    counts = write_finished_runs(exp, args.steps)
    extra["write records"] = time.perf_counter() - t0
    footer = f"{runs} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
    samples.append(median_sample(args.repeat, lambda: status(expect=footer)))

    def collect() -> Sample:
        for f in ("results.csv", "results.md"):
            (exp / f).unlink(missing_ok=True)
        t = run_cmd(["collect", str(exp)], env, work)[0]
        with open(exp / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        done = [r for r in rows if r["status"] == "completed"]
        check(len(rows) == runs and len(done) == counts["completed"] and all(r["steps"] == str(args.steps) for r in done),
              f"results.csv: {len(rows)} rows, {len(done)} completed with {args.steps} steps")
        return t

    samples.append(median_sample(args.repeat, collect))
    profile("status (records)", ["status", str(exp)])
    profile("collect", ["collect", str(exp)])

    # `submit` once more: the completed runs are left out, the failed and cancelled ones submitted again
    jobs = (exp / "slurm_jobs.yaml").read_text()

    def again() -> Sample:
        cancel_all(cluster, exp)
        (exp / "slurm_jobs.yaml").write_text(jobs)
        t, proc = run_cmd(["submit", str(exp)], env, work)
        check(f"skip {counts['completed']} completed run(s)" in proc.stdout, f"submit again: {proc.stdout[-500:]}")
        return t

    samples.append(median_sample(args.repeat, again))
    again_jobs = read_jobs_of(exp)[len(jobs_of_text(jobs)):]
    resubmitted = sorted(i for j in again_jobs for i in j.indices)
    check(len(resubmitted) == runs - counts["completed"], f"submit again: {len(resubmitted)} runs submitted")
    extra["again arrays"] = len(again_jobs)
    cancel_all(cluster, exp)
    extra["counts"] = counts
    extra["results.md KiB"] = (exp / "results.md").stat().st_size / 1024
    extra["loss_curves.svg KiB"] = (exp / "loss_curves.svg").stat().st_size / 1024 if (exp / "loss_curves.svg").exists() else 0
    extra["slurm_jobs.yaml bytes"] = (exp / "slurm_jobs.yaml").stat().st_size
    shutil.rmtree(exp, ignore_errors=True)
    return samples, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=GRID, help="the experiment is a GRID x GRID sweep (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (median reported)")
    ap.add_argument("--steps", type=int, default=50, help="steps in each run's metric log")
    ap.add_argument("--code", type=parse_code, action="append", default=[], metavar="NAME=PATH",
                    help="a source checkout to measure (repeatable); default: this checkout")
    ap.add_argument("--profile", action="store_true", help="also cProfile submit, status and collect (once each)")
    ap.add_argument("--top", type=int, default=10, help="functions shown per profile and list")
    ap.add_argument("--out", type=Path, help="also write the report to this markdown file")
    args = ap.parse_args()
    versions = args.code or [("this checkout", ROOT)]
    if len({n for n, _ in versions}) < len(versions):
        ap.error("each --code needs its own NAME")

    import slurm_cluster as sc

    missing = sc.missing_binaries()
    if missing:
        sys.exit(f"SLURM is not installed (missing {', '.join(missing)}); run .ci/install_slurm.sh")
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tcw_bench_scale_"))
    rows = []
    try:
        envs = {name: version_env(root) for name, root in versions}
        for name, root in versions:
            check_package(name, root, envs[name], work)
        assets = work / "assets"
        subprocess.run([sys.executable, "-m", "torchtune_config_writer.demo.assets", str(assets)], cwd=work,
                       env=version_env(ROOT), check=True, capture_output=True)
        with sc.slurm_cluster(work / "slurm", max_array_size=ARRAY_SIZE, max_job_count=200_000, gpus=0) as cluster:
            cluster.run("scontrol", "update", "PartitionName=debug", "State=DOWN")  # queue, never train
            for name, _ in versions:
                env = {**envs[name], **cluster.env}
                samples, extra = measure(name, env, work, cluster, assets, args)
                print(f"{name}: " + ", ".join(f"{c} {s.wall:.2f} s ({s.cpu:.2f} CPU)" for c, s in zip(COLUMNS, samples)),
                      flush=True)
                rows.append((name, samples, extra))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(rows, args, (load_before, os.getloadavg()[0]))
    print("\n" + report)
    if args.out:
        args.out.write_text(report)
        print(f"wrote {args.out}")


def render(rows, args, load: tuple[float, float]) -> str:
    runs = args.grid * args.grid
    arrays = math.ceil(runs / ARRAY_SIZE)
    lines = [f"# `submit`, `status` and `collect` of {runs:,} runs on a real SLURM", "",
             "Written by `bench/bench_slurm_scale.py" + (" --profile" if args.profile else "")
             + "` (what it measures and how: its docstring, and bench/README.md).", "",
             f"{os.cpu_count()} CPU cores; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after (other work "
             f"on the machine inflates every wall time). Each cell: wall-clock seconds of a fresh process, and in "
             f"parentheses its CPU seconds (user + system, with squeue and sbatch); median of {args.repeat}. "
             f"MaxArraySize {ARRAY_SIZE}: the {runs:,} runs are {arrays} arrays, chained; the tasks stay pending "
             "(partition down).", "",
             "| version | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(f"{s.wall:.2f} ({s.cpu:.2f})" for s in samples) + " |"
              for name, samples, _ in rows]
    lines.append("")
    for name, _, extra in rows:
        lines.append(f"- {name}: the first (cold) validated `generate` {extra['generate cold'].wall:.1f} s; "
                     f"status records written for the runs: {extra['counts']}, with a SLURM log and a metric log of "
                     f"{args.steps} steps each, in {extra['write records']:.1f} s (not timed as a command); "
                     f"slurm_jobs.yaml {extra['slurm_jobs.yaml bytes']:,} bytes; `submit (again)`: "
                     f"{runs - extra['counts']['completed']} runs in {extra['again arrays']} arrays; results.md "
                     f"{extra['results.md KiB']:.0f} KiB, loss_curves.svg {extra['loss_curves.svg KiB']:.0f} KiB.")
    for name, _, extra in rows:
        for what, text in extra["profiles"].items():
            lines += ["", f"### {name}: `{what}` under cProfile", "", "```", text, "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
