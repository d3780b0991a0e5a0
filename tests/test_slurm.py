"""SLURM: the submit script (compile/sbatch.py), submission and status (execute/submit.py, slurm_state.py) — against a real single-node SLURM (no mocks).

Fast tests render scripts, run them under bash in a sandbox, and plan arrays;
``slow`` ones start a real munged/slurmctld/slurmd (tests/slurm_cluster.py)
and train the tiny CPU model in array tasks.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from torchtune_config_writer import expdir
from torchtune_config_writer.compile import sbatch
from torchtune_config_writer.compile.schema import SlurmSettings
from torchtune_config_writer.errors import RunNotRunnableError, SlurmSettingsError
from torchtune_config_writer.execute import slurm_state, submit
from helpers import cli, custom_recipe, run_table
from torchtune_config_writer.expdir import (
    JobRecord, SlurmState, State, StatusRecord, load_mapping, plan_arrays, read_jobs, write_status,
)

# Values that have broken generated scripts elsewhere: blanks, both quotes, command substitution,
# sbatch's comment character, backslashes, globs, non-ASCII.
NASTY = [
    "plain",
    "two words",
    "it's",
    'say "hi"',
    "$(touch PWNED)",
    "`touch PWNED`",
    "a # not a comment",
    "back\\slash",
    "semi;colon && amp | pipe > out",
    "*?[glob]{x,y}~",
    "ünïcødé ✓",
    "ends with backslash\\",
    "'\"'\"' mixed \\\" \\' #",
]


def read_all(exp: Path) -> dict[str, StatusRecord]:
    return expdir.read_all(exp, load_mapping(exp))


def record(exp: Path, run_id: str, state: str, **fields) -> None:
    """Write a status record as run_one would."""
    write_status(exp, StatusRecord(run_id, State(state), **fields))


def mapping_of(n: int, settings: SlurmSettings, name: str = "demo") -> expdir.RunMapping:
    """A run table of ``n`` runs with the SLURM settings ``generate`` would record for ``settings``."""
    return run_table(n, sbatch.plan_resources(settings, [("run_000", "cuda", None)])[0], name)


def render(settings: SlurmSettings, n: int = 5) -> str:
    return sbatch.render_submit_script(mapping_of(n, settings), settings)


# ----------------------------------------------------------------------------- #SBATCH values


@pytest.mark.parametrize("value", NASTY)
def test_sbatch_value_reads_back_through_sbatchs_parser(value: str) -> None:
    line = f"--job-name={sbatch.sbatch_value(value, 'slurm.job_name')} --exclusive"
    assert sbatch.sbatch_split(line) == [f"--job-name={value}", "--exclusive"]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1).filter(str.isprintable))
def test_sbatch_value_round_trips_any_printable_text(value: str) -> None:
    assert sbatch.sbatch_split(f"--comment={sbatch.sbatch_value(value, 'x')}") == [f"--comment={value}"]


@pytest.mark.parametrize("value", ["two\nlines", "tab\there", "cr\r", "nul\0", ""])
def test_sbatch_value_refuses_what_a_sbatch_line_cannot_hold(value: str) -> None:
    with pytest.raises(SlurmSettingsError, match="slurm.partition"):
        sbatch.sbatch_value(value, "slurm.partition")


def test_extra_sbatch_lines_are_checked() -> None:
    assert sbatch.sbatch_extra_line("#SBATCH --exclusive") == "--exclusive"
    assert sbatch.sbatch_extra_line('--comment="a b"') == '--comment="a b"'
    for bad, why in [("exclusive", "not an sbatch option"), ("--array=0-3", "manages"), ("-o x.out", "manages"),
                     ("--job-name=x", "slurm.job_name"), ('--comment="open', "unmatched"),
                     ("--exclusive\n--mem=1G", "newline")]:
        with pytest.raises(SlurmSettingsError, match=why):
            sbatch.sbatch_extra_line(bad)


# ----------------------------------------------------------------------------- rendering

def test_script_has_the_requested_sbatch_lines() -> None:
    settings = SlurmSettings(
        partition="gpu", account="proj", qos="high", time="1:00:00", gpus_per_run=2, cpus_per_task=8,
        mem="64G", constraint="a100", extra_sbatch=["--exclusive"], max_concurrent=3)
    text = render(settings)
    lines = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    assert lines == ["#SBATCH --job-name=demo", "#SBATCH --array=0-4%3", "#SBATCH --output=logs/%A_%a.out",
                      "#SBATCH --nodes=1", "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --qos=high",
                      "#SBATCH --time=1:00:00", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G",
                      "#SBATCH --constraint=a100", "#SBATCH --signal=B:USR1@300", "#SBATCH --requeue",
                      "#SBATCH --open-mode=append", "#SBATCH --gres=gpu:2", "#SBATCH --exclusive"]
    # submit's settings are recorded in run_mapping.yaml, not in a comment of the script
    plan = mapping_of(5, settings).slurm
    assert (plan.max_array_size, plan.max_concurrent, len(plan_arrays(range(5), plan.max_array_size))) == (1001, 3, 1)
    assert "{" not in "".join(ln for ln in text.splitlines() if ln.startswith("#") and not ln.startswith("#SBATCH"))


def test_no_gres_without_gpus_and_no_array_limit_without_max_concurrent() -> None:
    text = render(SlurmSettings(gpus_per_run=0))
    assert "--gres" not in text
    assert "#SBATCH --array=0-4\n" in text


def test_default_setup_activates_this_environment() -> None:
    text = render(SlurmSettings())
    if sys.prefix != sys.base_prefix:
        assert f"source {Path(sys.prefix) / 'bin' / 'activate'}" in text
    assert f"exec {sys.executable} -m torchtune_config_writer task" in text


def test_custom_setup_is_kept_verbatim_and_must_be_valid_bash() -> None:
    text = render(SlurmSettings(setup=["module load cuda/12", "conda activate x"]))
    assert "module load cuda/12\nconda activate x\n" in text
    assert "exec python3 -m torchtune_config_writer task" in text
    with pytest.raises(SlurmSettingsError, match="slurm.setup is not valid bash"):
        render(SlurmSettings(setup=["echo 'unclosed"]))


def test_script_names_no_path(tmp_path: Path) -> None:
    # generate writes the script into a temporary directory renamed into place afterwards.
    text = sbatch.render_submit_script(mapping_of(5, SlurmSettings(setup=[]), name="tmpname"), SlurmSettings(setup=[]))
    assert str(tmp_path) not in text


def _fake_env(root: Path) -> tuple[Path, Path]:
    """A fake venv (bin/activate + bin/python stub) at a path full of shell metacharacters."""
    prefix = root / "v e'n\"v $(touch PWNED_prefix) `touch PWNED_tick`"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "activate").write_text('echo activated > "$SANDBOX/activated"\n')
    python = prefix / "bin" / "python"
    # The stub records its argv, NUL-separated, instead of running anything.
    python.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$SANDBOX/argv"\nexit 7\n')
    python.chmod(0o755)
    return prefix, python


def _sandbox_run(script: Path, cwd: Path, sandbox: Path, task_id: int, *args: str) -> subprocess.CompletedProcess:
    """Run a rendered script under bash as one array task would, with a clean environment."""
    stub_bin = sandbox / "stubbin"
    stub_bin.mkdir(exist_ok=True)
    (stub_bin / "sleep").write_text('#!/bin/bash\necho "$1" >> "$SANDBOX/slept"\n')  # record, don't wait
    (stub_bin / "sleep").chmod(0o755)
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin", "HOME": str(sandbox), "SANDBOX": str(sandbox),
           "SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_JOB_ID": "99"}
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_rendered_script_runs_without_injection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    prefix, python = _fake_env(sandbox)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path / "base"))
    monkeypatch.setattr(sys, "executable", str(python))
    exp = sandbox / "exp dir 'q' \"dq\" $(touch PWNED_exp) ;touch PWNED_semi"
    exp.mkdir()
    (exp / "run_mapping.yaml").write_text("runs: []\n")
    name = 'n"; touch PWNED_name; echo " $(touch PWNED_name2) # x'
    settings = SlurmSettings(job_name=name, max_concurrent=2, stagger_seconds=1.5, partition="a b")
    script = sbatch.write_submit_scripts(exp, mapping_of(9, settings), settings)[0]
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = _sandbox_run(script, exp, sandbox, 3, "4")
    assert proc.returncode == 7, proc.stderr  # the stub's exit code: the script exec'd it
    argv = (sandbox / "argv").read_text().split("\0")[:-1]
    assert argv == ["-m", "torchtune_config_writer", "task", str(exp), "7"]  # index = task 3 + offset 4
    assert (sandbox / "activated").read_text() == "activated\n"
    assert (sandbox / "slept").read_text() == "1.500\n"  # (3 % 2) * 1.5 s
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    job_name = next(ln for ln in script.read_text().splitlines() if ln.startswith("#SBATCH --job-name="))
    assert sbatch.sbatch_split(job_name[len("#SBATCH "):]) == [f"--job-name={name}"]


def test_script_refuses_a_bad_offset_and_a_foreign_directory(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "run_mapping.yaml").write_text("runs: []\n")
    script = sbatch.write_submit_scripts(exp, mapping_of(5, SlurmSettings(setup=[])), SlurmSettings(setup=[]))[0]
    proc = _sandbox_run(script, exp, tmp_path, 0, "1; touch PWNED")
    assert proc.returncode == 2 and "offset must be a number" in proc.stderr
    proc = _sandbox_run(script, tmp_path, tmp_path, 0)
    assert proc.returncode == 2 and "not an experiment directory" in proc.stderr
    assert not list(tmp_path.rglob("PWNED*"))


# ----------------------------------------------------------------------------- arrays


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 60), min_size=1), st.integers(1, 20))
def test_plan_arrays_covers_every_run_once(indices: set[int], size: int) -> None:
    chunks = plan_arrays(indices, size)
    covered = [i for c in chunks for i in c.indices]
    assert sorted(covered) == sorted(indices)
    assert all(0 <= t < size for c in chunks for t in c.task_ids)
    assert all(c.offset % size == 0 for c in chunks)


def test_compress_ranges() -> None:
    assert expdir.compress_ranges([7, 3, 0, 1, 2, 9, 10]) == "0-3,7,9-10"
    assert expdir.ArrayChunk(0, (3, 7)).spec(2) == "3,7%2"


# ----------------------------------------------------------------------------- submit without a cluster


@pytest.fixture
def handmade(make_experiment_dir):
    """An experiment directory written by hand (Appendix B), with a submit.sbatch; runs a list of overrides."""
    def make(n: int, settings: SlurmSettings | None = None, **kwargs) -> Path:
        settings = settings or SlurmSettings(gpus_per_run=0)
        exp = make_experiment_dir([{"optimizer.lr": 1e-3 * (i + 1)} for i in range(n)],
                                  slurm=sbatch.plan_resources(settings, [("run_000", "cpu", None)])[0], **kwargs)
        sbatch.write_submit_scripts(exp, load_mapping(exp), settings)[0]
        return exp
    return make


def test_dry_run_splits_over_max_array_size(handmade) -> None:
    exp = handmade(7, SlurmSettings(gpus_per_run=0, max_array_size=3, max_concurrent=2))
    lines: list[str] = []
    arrays = submit.submit(exp, dry_run=True, echo=lines.append)
    assert [(a.chunk.offset, a.chunk.spec(2)) for a in arrays] == [(0, "0-2%2"), (3, "0-2%2"), (6, "0%2")]
    assert sorted(i for a in arrays for i in a.chunk.indices) == list(range(7))
    assert [a.command[-1] for a in arrays] == ["0", "3", "6"]  # the offset is the script's argument
    assert "--dependency=afterany" not in " ".join(arrays[0].command)
    assert all("--dependency=afterany:" in " ".join(a.command) for a in arrays[1:])  # keeps K across arrays
    assert len(lines) == 3 and all(ln.split()[0].endswith("sbatch") for ln in lines)
    assert not (exp / expdir.JOBS_FILE).exists()


def test_dry_run_of_a_selection_and_cli(handmade) -> None:
    exp = handmade(6, SlurmSettings(gpus_per_run=0, max_array_size=4))
    result = cli("submit", str(exp), "--runs", "1,3-5", "--dry-run")
    assert result.exit_code == 0, result.output
    assert [re.search(r"--array=(\S+)", ln).group(1) for ln in result.stdout.splitlines()] == ["1,3", "0-1"]


def test_dry_run_needs_no_cluster(handmade, tmp_path: Path) -> None:
    exp = handmade(3, SlurmSettings(gpus_per_run=0, max_array_size=2))
    fake, asked = tmp_path / "bin", tmp_path / "asked"
    fake.mkdir()
    for tool in ("scontrol", "squeue", "sbatch"):  # a controller that never answers
        (fake / tool).write_text(f"#!/bin/bash\ntouch {asked}\nsleep 60\n")
        (fake / tool).chmod(0o755)
    result = cli("submit", str(exp), "--dry-run", env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert result.exit_code == 0, result.output
    assert re.findall(r"--array=(\S+)", result.stdout) == ["0-1", "0"]
    assert not asked.exists()  # no SLURM tool was asked anything
    assert "at most 2 tasks, from slurm.max_array_size" in result.stderr


def test_submit_refuses_unvalidated_or_edited_configs(handmade) -> None:
    exp = handmade(3, validation=["passed", "failed", "passed"])
    with pytest.raises(RunNotRunnableError, match="run_001 may not run.*failed validation"):
        submit.submit(exp, dry_run=True)
    assert [a.chunk.indices for a in submit.submit(exp, "0,2", dry_run=True, echo=lambda s: None)] == [(0, 2)]
    with open(exp / "configs" / "run_002.yaml", "a") as f:
        f.write("# edited\n")
    result = cli("submit", str(exp), "--runs", "0,2", "--dry-run")
    assert result.exit_code == 1 and "run_002 may not run" in result.stderr and "changed" in result.stderr
    assert "Traceback" not in result.output


def test_completed_runs_are_submitted_only_with_force(handmade) -> None:
    exp = handmade(3)
    record(exp, "run_001", "completed", **{"exit_code": 0})
    lines: list[str] = []
    arrays = submit.submit(exp, dry_run=True, echo=lines.append)
    assert [a.chunk.indices for a in arrays] == [(0, 2)]
    assert "skip 1 completed run(s) (run_001); --force submits them again" in lines
    assert not any("--export" in part for a in arrays for part in a.command)
    forced = submit.submit(exp, dry_run=True, force=True, echo=lambda s: None)
    assert [a.chunk.indices for a in forced] == [(0, 1, 2)]
    assert "--export=ALL,TORCHTUNE_CONFIG_WRITER_FORCE=1" in forced[0].command


def test_submit_refuses_a_directory_slurm_cannot_log_under(handmade, tmp_path: Path) -> None:
    exp = handmade(1)
    odd = exp.rename(tmp_path / "100%_done")
    result = cli("submit", str(odd), "--dry-run")
    assert result.exit_code == 1 and "contains '%'" in result.stderr


def test_submit_without_sbatch_is_a_clear_error(handmade, tmp_path: Path) -> None:
    exp = handmade(2)
    result = cli("submit", str(exp), env={"PATH": str(tmp_path)})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: sbatch is not on PATH")


def test_status_from_records_only(handmade, tmp_path: Path) -> None:
    exp = handmade(3)
    record(exp, "run_000", "completed", **{"exit_code": 0,
                       "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:01:05+00:00"})
    record(exp, "run_001", "failed", **{"exit_code": 1,
                       "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:00:03+00:00",
                       "slurm_array_job_id": "41", "slurm_array_task_id": "1"})
    result = cli("status", str(exp), env={"PATH": str(tmp_path)})  # no squeue
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln.split() for ln in result.stdout.splitlines()[1:4]}
    assert rows["run_000"][1:] == ["lr=0.001", "completed", "0", "1m05s", "-"]
    assert rows["run_001"][2:] == ["failed", "1", "3s", "41_1"]
    assert rows["run_002"][2:] == ["pending", "-", "-", "-"]
    assert "3 run(s): 1 completed, 1 failed, 1 pending" in result.stdout


def test_slurm_states_override_records_only_when_they_know_more(handmade) -> None:
    exp = handmade(8)
    expdir.append_job(exp, JobRecord("50", "2026-01-01T00:00:00+00:00", "0-6", 0, tuple(range(7)),
                                     "sbatch --parsable --array=0-6"))
    submitted = read_jobs(exp)[0].submitted
    rec = {"started": submitted, "slurm_array_job_id": "50"}
    record(exp, "run_000", "completed", **{"exit_code": 0, **rec, "slurm_array_task_id": "0"})
    record(exp, "run_001", "running", **{**rec, "slurm_array_task_id": "1"})
    record(exp, "run_002", "running", **{**rec, "slurm_array_task_id": "2"})
    record(exp, "run_005", "failed", **{"exit_code": 1, "started": "2000-01-01T00:00:00+00:00"})
    record(exp, "run_006", "cancelled", **{"exit_code": 143, **rec, "slurm_array_task_id": "6"})
    # run_007 was submitted by hand (`sbatch submit.sbatch`): only its record names the job.
    record(exp, "run_007", "running", **{"started": submitted, "slurm_array_job_id": "60",
                       "slurm_array_task_id": "7"})
    subs = slurm_state.submissions(exp, load_mapping(exp), read_all(exp))
    assert sorted({s.job_id for s in subs.values()}) == ["50", "60"]
    live = {("50", t): slurm_state.TaskState("50", t, SlurmState(state), code, 5.0, "")
            for t, state, code in [(0, "COMPLETED", 0), (1, "RUNNING", None), (2, "TIMEOUT", 143),
                                   (3, "CANCELLED", 0), (4, "PENDING", None), (5, "PENDING", None),
                                   (6, "TIMEOUT", 143)]}
    live[("60", 7)] = slurm_state.TaskState("60", 7, SlurmState.NODE_FAIL, 0, 9.0, "")
    states = {s.run_id: s for s in slurm_state.run_states(exp, live=live)}
    assert states["run_000"].state == "completed"            # the record of this very task
    assert states["run_001"].state == "RUNNING"
    assert (states["run_002"].state, states["run_002"].exit_code) == ("TIMEOUT", 143)  # died without a final record
    assert states["run_003"].state == "CANCELLED"            # cancelled while pending: no record at all
    assert states["run_004"].state == "PENDING"
    assert states["run_005"].state == "PENDING"              # an older failure, now queued again
    assert (states["run_006"].state, states["run_006"].exit_code) == ("TIMEOUT", 143)  # why it was cancelled
    assert (states["run_007"].state, states["run_007"].job) == ("NODE_FAIL", "60_7")
    picked, completed = submit.select_for_submit(load_mapping(exp), list(states.values()), None, failed=True)
    assert [r.run_id for r in picked] == ["run_002", "run_003", "run_006", "run_007"] and completed == []


def test_generate_writes_the_submit_script(tiny_assets, tmp_path: Path) -> None:
    exp = _tiny_experiment(tiny_assets, tmp_path / "gen", lrs=[1e-3, 2e-3], validate=False,
                           slurm_settings={"gpus_per_run": 0, "max_concurrent": 1, "job_name": "x y"})
    text = (exp / "submit.sbatch").read_text()
    assert '#SBATCH --job-name="x y"' in text and "#SBATCH --array=0-1%1" in text
    assert str(exp) not in text


# ----------------------------------------------------------------------------- real SLURM


def _tiny_experiment(tiny_assets, exp_dir: Path, lrs: list[float], *, slurm_settings: dict,
                     validate: bool = True, data_files: list[str] | None = None) -> Path:
    """Generate a tiny CPU sweep (2 training steps per run) into ``exp_dir``."""
    from torchtune_config_writer import generate_configs

    variables: dict = {"optimizer.lr": lrs}
    if data_files:
        variables["dataset.data_files"] = data_files
    generate_configs({
        "experiment_name": "tiny_slurm",
        "base_config_file": str(tiny_assets.base_config),
        "recipe": "lora_finetune_single_device",
        "variables": variables,
        "controls": {"max_steps_per_epoch": 2, "epochs": 1},
        "slurm": slurm_settings,
        "output": {"experiment_dir": str(exp_dir)},
    }, validate=validate)
    return exp_dir


def _wait(cluster, timeout: float = 900) -> float:
    t0 = time.monotonic()
    cluster.wait_idle(timeout)
    return time.monotonic() - t0


def _intervals(exp: Path) -> list[tuple[str, str]]:
    return [(r.started, r.ended) for r in read_all(exp).values() if r.started]


def _max_overlap(intervals: list[tuple[str, str]]) -> int:
    # Half-open [started, ended): a task that starts in the second another ended does not overlap it
    # (SLURM starts the next task only after the previous one exited, and second stamps keep that order).
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.slow
def test_sbatch_reads_our_escaped_values_back_exactly(slurm_cluster, tmp_path: Path) -> None:
    script = tmp_path / "held.sbatch"
    for value in NASTY:
        script.write_text(f"#!/bin/bash\n#SBATCH --job-name={sbatch.sbatch_value(value, 'n')}\n#SBATCH --hold\n"
                          f"#SBATCH --output=/dev/null\ntrue\n")
        job = slurm_cluster.run("sbatch", "--parsable", str(script)).stdout.strip()
        shown = slurm_cluster.run("scontrol", "-o", "show", "job", job).stdout
        slurm_cluster.run("scancel", job)
        assert re.search(r"JobName=(.*) UserId=", shown).group(1) == value
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


@pytest.mark.slow
def test_array_runs_every_run_with_split_arrays_and_concurrency_limit(slurm_cluster, tiny_assets, tmp_path):
    # A directory and job name full of shell metacharacters; 3 runs over arrays of 2 (MaxArraySize
    # setting) chained so that max_concurrent=1 holds across them although the node fits 2 tasks.
    exp = tmp_path / "we ird 'q' \"dq\" $(touch PWNED)" / "exp"
    _tiny_experiment(tiny_assets, exp, [1e-3, 2e-3, 3e-3], slurm_settings={
        "gpus_per_run": 0, "cpus_per_task": 1, "max_concurrent": 1, "max_array_size": 2,
        "job_name": "tiny $(touch PWNED) 'q' #1", "stagger_seconds": 0.2})
    result = cli("submit", str(exp))
    assert result.exit_code == 0, result.output
    jobs = read_jobs(exp)
    assert [(j.offset, list(j.indices)) for j in jobs] == [(0, [0, 1]), (2, [2])]
    names = slurm_cluster.run("squeue", "-h", "-t", "all", "-j", jobs[0].job_id, "-O", "Name:200").stdout
    assert names.split("\n")[0].strip() == "tiny $(touch PWNED) 'q' #1"
    wall = _wait(slurm_cluster)
    states = slurm_state.run_states(exp)
    assert [s.state for s in states] == ["completed"] * 3, cli("status", str(exp)).stdout
    records = read_all(exp)
    assert [(r.slurm_array_job_id, r.slurm_array_task_id) for r in records.values()] == [
        (jobs[0].job_id, "0"), (jobs[0].job_id, "1"), (jobs[1].job_id, "0")]
    assert _max_overlap(_intervals(exp)) == 1
    assert all((exp / r.log).is_file() for r in records.values())
    from torchtune_config_writer.results.collect import collect_rows

    _, rows = collect_rows(exp)
    assert [r["status"] for r in rows] == ["completed"] * 3 and all(r["steps"] == 2 for r in rows)
    status = cli("status", str(exp))
    assert "3 run(s): 3 completed" in status.stdout
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    print(f"\n3 runs, max_concurrent=1, 2 arrays: {wall:.1f} s")


@pytest.mark.slow
def test_a_custom_recipe_file_runs_as_an_array_task(slurm_cluster, tiny_assets, tmp_path):
    from torchtune_config_writer import generate_configs

    recipe = custom_recipe(tmp_path / "my recipes")
    exp = tmp_path / "exp"
    generate_configs({
        "experiment_name": "custom_recipe", "base_config_file": str(tiny_assets.base_config), "recipe": str(recipe),
        "variables": {"optimizer.lr": [1e-3]}, "controls": {"max_steps_per_epoch": 2, "epochs": 1},
        "slurm": {"cpus_per_task": 1}, "output": {"experiment_dir": str(exp)},
    })
    assert "--gres" not in (exp / expdir.SCRIPT_FILE).read_text()  # device: cpu, so no GPU is asked for
    assert cli("submit", str(exp)).exit_code == 0
    _wait(slurm_cluster)
    record = read_all(exp)["run_000"]
    assert record.state == "completed", (exp / record.log).read_text() if record.log else record
    assert shlex.join([str(recipe), "--config", "configs/run_000.yaml"]) in (exp / record.log).read_text()
    assert (exp / "runs" / "run_000" / "epoch_0" / "adapter_model.pt").is_file()


@pytest.mark.slow
def test_failed_run_is_resubmitted_alone(slurm_cluster, tiny_assets, tmp_path):
    data = Path(tiny_assets.data_file)
    spare = tmp_path / "spare.json"
    shutil.copy(data, spare)
    exp = _tiny_experiment(tiny_assets, tmp_path / "exp", [1e-3], data_files=[str(data), str(spare)],
                           slurm_settings={"gpus_per_run": 0, "cpus_per_task": 1, "max_concurrent": 1})
    spare.rename(tmp_path / "away.json")  # run_001 now fails at runtime: its data file is missing
    result = cli("submit", str(exp))
    assert result.exit_code == 0, result.output
    job = read_jobs(exp)[0].job_id
    t0 = time.monotonic()
    wall = _wait(slurm_cluster)
    states = {s.run_id: s for s in slurm_state.run_states(exp)}
    assert states["run_000"].state == "completed"
    assert states["run_001"].state == "failed" and states["run_001"].exit_code not in (0, None)
    # Nothing left to resubmit except run_001.
    dry = cli("submit", str(exp), "--failed", "--dry-run")
    assert re.findall(r"--array=(\S+)", dry.stdout) == ["1%1"]

    (tmp_path / "away.json").rename(spare)
    result = cli("submit", str(exp), "--failed")
    assert result.exit_code == 0, result.output
    job2 = read_jobs(exp)[-1].job_id
    assert list(read_jobs(exp)[-1].indices) == [1]
    _wait(slurm_cluster)
    records = read_all(exp)
    assert [r.state for r in records.values()] == ["completed", "completed"]
    assert records["run_000"].slurm_array_job_id == job  # not rerun
    assert records["run_001"].slurm_array_job_id == job2
    print(f"\n2 runs (one failing), max_concurrent=1: {wall:.1f} s; resubmitted run: {time.monotonic() - t0:.1f} s total")


@pytest.mark.slow
def test_cancelled_while_pending_shows_cancelled_and_is_resubmitted(slurm_cluster, handmade) -> None:
    # Submitted held, then cancelled: the tasks never start, so they never write a status record
    # and only squeue can tell what happened to them.
    exp = handmade(3, SlurmSettings(gpus_per_run=0, extra_sbatch=["--hold"]))
    record(exp, "run_002", "completed", **{"exit_code": 0})
    assert cli("submit", str(exp), "--runs", "0-1").exit_code == 0
    job = read_jobs(exp)[0].job_id
    status = cli("status", str(exp)).stdout
    assert re.search(r"run_000 .* PENDING", status) and re.search(r"run_001 .* PENDING", status), status
    again = cli("submit", str(exp), "--runs", "1")
    assert again.exit_code == 1 and "already queued or running" in again.stderr
    slurm_cluster.run("scancel", job)
    _wait(slurm_cluster)
    status = cli("status", str(exp)).stdout
    assert re.search(rf"run_000 .* CANCELLED +\S+ +\S+ +{job}_0", status), status
    assert re.search(r"run_001 .* CANCELLED", status) and re.search(r"run_002 .* completed", status)
    assert "3 run(s): 2 CANCELLED, 1 completed" in status and "live from SLURM" in status
    assert not read_all(exp)["run_000"].started
    dry = cli("submit", str(exp), "--failed", "--dry-run")
    assert re.findall(r"--array=(\S+)", dry.stdout) == ["0-1"]


@pytest.mark.slow
def test_gpus_per_run_reach_the_task_and_torchrun(slurm_cluster, handmade, monkeypatch) -> None:
    if not slurm_cluster.gpus:
        pytest.skip("the test cluster has no fake GPUs (making their device files needs root)")
    # The setup records what SLURM allocated and stops the task before any training.
    exp = handmade(2, SlurmSettings(gpus_per_run=2, setup=[
        'echo "$SLURM_ARRAY_TASK_ID $SLURM_GPUS_ON_NODE $CUDA_VISIBLE_DEVICES" >> gpus.txt', "exit 0"]))
    assert "#SBATCH --gres=gpu:2" in (exp / "submit.sbatch").read_text()
    assert cli("submit", str(exp)).exit_code == 0
    _wait(slurm_cluster)
    seen = sorted(line.split() for line in (exp / "gpus.txt").read_text().splitlines())
    assert seen == [["0", "2", "0,1"], ["1", "2", "0,1"]]
    # run_one builds torchrun's --nproc_per_node from that variable for distributed recipes.
    from torchtune_config_writer.execute.runner import build_command

    monkeypatch.setenv("SLURM_GPUS_ON_NODE", seen[0][1])
    import dataclasses

    mapping = dataclasses.replace(run_table(1), distributed=True, recipe="lora_finetune_distributed")
    cmd = build_command(mapping, mapping.runs[0])
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"


@pytest.mark.slow
def test_cluster_left_by_a_killed_session_is_stopped(tmp_path: Path) -> None:
    import slurm_cluster as sc

    if sc.missing_binaries():
        pytest.skip("SLURM is not installed; run .ci/install_slurm.sh")
    root = tmp_path / "orphan"
    proc = subprocess.Popen([sys.executable, str(Path(sc.__file__)), str(root)], stdout=subprocess.PIPE, text=True)
    assert "cluster up" in proc.stdout.readline()
    pids = {n: sc._read_pid(p, n) for n, p in sc._pid_files(root.resolve()).items()}
    assert all(pids.values()), pids
    proc.kill()  # SIGKILL: no cleanup runs, the daemons are orphaned
    proc.wait()
    assert all(sc._read_pid(p, n) for n, p in sc._pid_files(root.resolve()).items())
    assert root.resolve() in sc.reap_orphans()
    assert not any(sc._read_pid(p, n) for n, p in sc._pid_files(root.resolve()).items())
