"""Multi-node runs (Appendix J.7): ``slurm.nodes > 1`` for distributed recipes, launched with srun + a torchrun
rendezvous (execute/launch.py).

Fast tests check the schema, the refusal for single-device recipes, the generated ``#SBATCH`` lines and the
exact launch command. The ``slow`` ones use the real local SLURM, which has one node: a job whose allocation
is one node with two tasks (``sbatch --nodes=1 --ntasks-per-node=2`` over the generated two-node script)
goes through the same script, ``task`` command and launch path as a two-node job, so torchrun gets
``--nnodes 2`` from two srun tasks that meet at one rendezvous on the head node.

torchtune's own ``full_finetune_distributed`` picks gloo on the CPU but asks for GPU memory statistics
twice (which raises on the CPU); the real training test runs a copy of it with only those two calls
guarded, plus one line recording each rank's environment. The registry recipe itself is run too, through
``tune run``, to show the rendezvous arguments reach torchrun and both ranks start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

from torchtune_config_writer import expdir, generate_configs
from torchtune_config_writer.compile.schema import load_experiment
from torchtune_config_writer.errors import ExperimentSchemaError, SlurmSettingsError
from torchtune_config_writer.execute import launch, runner
from torchtune_config_writer.expdir import State, load_mapping, read_status
from helpers import LORA_1B, custom_recipe

TINY_MODEL = {"_component_": "torchtune.models.llama2.llama2", "vocab_size": 512, "num_layers": 2, "num_heads": 4,
              "num_kv_heads": 4, "embed_dim": 64, "intermediate_dim": 128, "max_seq_len": 256}

# The environment of a two-node array task as SLURM sets it in the batch script (first node).
TWO_NODES = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1",
             "SLURM_JOB_NODELIST": "gpu[017-018]", "SLURMD_NODENAME": "gpu017", "SLURM_GPUS_ON_NODE": "8",
             "SLURM_CPUS_PER_TASK": "32"}


def sbatch_lines(script: Path) -> list[str]:
    return [ln for ln in script.read_text().splitlines() if ln.startswith("#SBATCH")]


def slurm_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly ``env`` as the job's SLURM variables (none left over from a surrounding job)."""
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SLURMD_")) or key in (launch.RDZV_HOST_ENV, runner.NPROC_ENV):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def multinode_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchtune's shipped 70B multi-node config on 2 nodes of 8 GPUs (generated, not validated: no 70B here)."""
    exp = tmp_path_factory.mktemp("multinode") / "exp"
    generate_configs({"experiment_name": "big", "base_config": "llama3_3/70B_full_multinode",
                      "slurm": {"nodes": 2, "gpus_per_run": 8, "time": "2-00:00:00"},
                      "output": {"experiment_dir": str(exp)}}, validate=False)
    return exp


# ----------------------------------------------------------------------------- schema and refusals


def test_schema_takes_several_nodes_and_refuses_none() -> None:
    assert load_experiment({"experiment_name": "a", "base_config": LORA_1B, "slurm": {"nodes": 4}}).slurm.nodes == 4
    with pytest.raises(ExperimentSchemaError, match="slurm.nodes"):
        load_experiment({"experiment_name": "a", "base_config": LORA_1B, "slurm": {"nodes": 0}})


def test_single_device_recipes_refuse_several_nodes(tmp_path: Path, tiny_assets) -> None:
    with pytest.raises(SlurmSettingsError) as e:
        generate_configs({"experiment_name": "a", "base_config": LORA_1B, "slurm": {"nodes": 2}},
                         validate=False, write=False)
    message = str(e.value)
    assert "slurm.nodes is 2" in message and "lora_finetune_single_device trains on one device" in message
    assert "lora_finetune_distributed" in message  # the way out
    # a recipe file without init_process_group is single-device too
    mine = custom_recipe(tmp_path / "recipes")
    with pytest.raises(SlurmSettingsError, match=re.escape(f"{mine} trains on one device")):
        generate_configs({"experiment_name": "a", "base_config_file": str(tiny_assets.base_config),
                          "recipe": str(mine), "slurm": {"nodes": 3}}, validate=False, write=False)


# ----------------------------------------------------------------------------- scripts


def test_multinode_script_asks_one_task_per_node_and_gpus_per_node(multinode_dir: Path) -> None:
    lines = sbatch_lines(multinode_dir / "submit.sbatch")
    # (other lines, e.g. the time limit's signal and requeue, are not this test's business)
    assert [ln for ln in lines if re.match(r"#SBATCH --(nodes|ntasks|gres|gpus|cpus|array)", ln)] == [
        "#SBATCH --array=0", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:8"]
    mapping = load_mapping(multinode_dir)
    assert (mapping.recipe, mapping.distributed, mapping.slurm.nodes, mapping.slurm.gpus_per_run) == \
        ("full_finetune_distributed", True, 2, 8)
    assert "starts the training with srun" in (multinode_dir / "submit.sbatch").read_text()


def test_one_node_scripts_are_unchanged(tmp_path: Path) -> None:
    generate_configs({"experiment_name": "one", "base_config": "llama3_2/1B_full", "slurm": {"gpus_per_run": 2},
                      "output": {"experiment_dir": str(tmp_path / "exp")}}, validate=False)
    lines = sbatch_lines(tmp_path / "exp" / "submit.sbatch")
    assert "#SBATCH --nodes=1" in lines and not any("ntasks" in ln for ln in lines)
    assert "srun" not in (tmp_path / "exp" / "submit.sbatch").read_text()


def test_evaluation_of_a_multinode_run_asks_for_one_node(tmp_path: Path, tiny_assets) -> None:
    exp = tmp_path / "exp"
    generate_configs({"experiment_name": "ev", "base_config_file": str(tiny_assets.base_config),
                      "recipe": "full_finetune_distributed", "controls": {"model": TINY_MODEL},
                      "slurm": {"nodes": 2, "gpus_per_run": 4},
                      "evaluation": {"heldout": {"data_files": str(tiny_assets.data_file)}},
                      "output": {"experiment_dir": str(exp)}}, validate=False)
    assert "#SBATCH --nodes=2" in sbatch_lines(exp / "submit.sbatch")
    evaluation = sbatch_lines(exp / "eval.sbatch")
    assert "#SBATCH --nodes=1" in evaluation and not any("ntasks" in ln for ln in evaluation)
    assert expdir.script_groups(load_mapping(exp), evaluation=True)[0].resources.nodes == 1


# ----------------------------------------------------------------------------- the launch command


def test_registry_recipe_launch_on_two_nodes(multinode_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, TWO_NODES)
    mapping = load_mapping(multinode_dir)
    cmd = runner.build_command(mapping, mapping.runs[0])
    assert cmd == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                   "--cpus-per-task=32", *runner.tune_command(), "run",
                   "--nnodes", "2", "--nproc_per_node", "8", "--rdzv_id", "4242", "--rdzv_backend", "c10d",
                   "--rdzv_endpoint", "gpu017:24242", "full_finetune_distributed", "--config", "configs/run_000.yaml"]


def test_recipe_file_launch_on_two_nodes(multinode_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, {**TWO_NODES, "SLURM_CPUS_PER_TASK": ""})
    mapping = dataclasses.replace(load_mapping(multinode_dir), recipe="/recipes/my_distributed.py")
    cmd = runner.build_command(mapping, mapping.runs[0], nproc_per_node=4)
    assert cmd == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                   sys.executable, "-m", "torch.distributed.run",
                   "--nnodes", "2", "--nproc_per_node", "4", "--rdzv_id", "4242", "--rdzv_backend", "c10d",
                   "--rdzv_endpoint", "gpu017:24242", "/recipes/my_distributed.py", "--config", "configs/run_000.yaml"]


def test_rendezvous_host_can_be_named(multinode_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, {**TWO_NODES, launch.RDZV_HOST_ENV: "10.1.2.3"})
    mapping = load_mapping(multinode_dir)
    assert "10.1.2.3:24242" in runner.build_command(mapping, mapping.runs[0])


def test_one_node_launches_are_unchanged(multinode_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mapping = load_mapping(multinode_dir)
    local = [*runner.tune_command(), "run", "--nnodes", "1", "--nproc_per_node", "8", "full_finetune_distributed",
             "--config", "configs/run_000.yaml"]
    # a local `run` (no SLURM job) trains on this machine alone, whatever slurm.nodes says
    slurm_env(monkeypatch, {})
    assert runner.build_command(mapping, mapping.runs[0], nproc_per_node=8) == local
    # one node asked for, or an allocation of a single task: no srun, no rendezvous endpoint
    slurm_env(monkeypatch, TWO_NODES)
    one = dataclasses.replace(mapping, slurm=dataclasses.replace(mapping.slurm, nodes=1))
    assert runner.build_command(one, one.runs[0]) == local
    slurm_env(monkeypatch, {**TWO_NODES, "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_NTASKS": "1"})
    assert runner.build_command(mapping, mapping.runs[0]) == local
    # a single-device recipe never gets srun
    slurm_env(monkeypatch, TWO_NODES)
    single = dataclasses.replace(mapping, recipe="full_finetune_single_device", distributed=False)
    assert runner.build_command(single, single.runs[0])[-4:] == \
        ["run", "full_finetune_single_device", "--config", "configs/run_000.yaml"]


def test_a_runs_own_node_count_wins(multinode_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm_env(monkeypatch, TWO_NODES)
    mapping = load_mapping(multinode_dir)
    run = dataclasses.replace(mapping.runs[0], resources={"nodes": 1})
    assert launch.planned_nodes(mapping, run) == 1 and runner.build_command(mapping, run)[0] != "srun"


def test_array_tasks_get_their_own_rendezvous() -> None:
    # array tasks that start together have consecutive job ids and may share a head node
    ports = {launch.rdzv_port(job) for job in range(81000, 81050)}
    assert len(ports) == 50
    assert all(launch.RDZV_PORT_BASE <= p < launch.RDZV_PORT_BASE + launch.RDZV_PORT_SPAN < 32768 for p in ports)


@pytest.mark.parametrize("nodelist, first", [
    ("gpu017", "gpu017"), ("gpu[017-018]", "gpu017"), ("gpu[017,020-021],cpu01", "gpu017"),
    ("a-b[3-4]", "a-b3"), ("r[2-3]-n[07,09]", "r2-n07"), ("node-[001-100]", "node-001"), ("x,y", "x"),
])
def test_first_host_of_a_nodelist(nodelist: str, first: str) -> None:
    assert launch.first_host(nodelist) == first


# ----------------------------------------------------------------------------- real SLURM, one node, two tasks


# Inserted after the recipe's init_process_group: what each rank saw, for the test to read back.
_RECORD_RANK = '''
        import json as _json, os as _os
        _keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_STEP_ID", "SLURM_JOB_ID")
        _out = _os.path.join(cfg.output_dir, "ranks")
        _os.makedirs(_out, exist_ok=True)
        with open(_os.path.join(_out, f"rank_{_os.environ['RANK']}.json"), "w") as _f:
            _json.dump({k: _os.environ.get(k) for k in _keys} | {"pid": _os.getpid(),
                       "backend": torch.distributed.get_backend()}, _f)
'''


def cpu_full_distributed(directory: Path) -> Path:
    """torchtune's full_finetune_distributed with its two GPU-memory calls skipped on the CPU, recording ranks."""
    from torchtune_config_writer.compile import registry

    text = (registry.configs_dir().parent / "full_finetune_distributed.py").read_text()
    for old, new in [
        ("        if self._is_rank_zero:\n            memory_stats = training.get_memory_stats(",
         "        if self._is_rank_zero and self._device.type == 'cuda':\n            memory_stats = training.get_memory_stats("),
        ("        training.cleanup_before_training()\n",
         "        if self._device.type == 'cuda':\n            training.cleanup_before_training()\n"),
        ("        init_process_group(self.distributed_backend)\n",
         "        init_process_group(self.distributed_backend)\n" + _RECORD_RANK),
    ]:
        assert text.count(old) == 1, f"torchtune's recipe changed: {old!r} not found once"
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cpu_full_distributed.py"
    path.write_text(text)
    return path


def _tiny_multinode(tiny_assets, exp: Path, recipe: str, **controls) -> Path:
    generate_configs({
        "experiment_name": "tiny_multinode", "base_config_file": str(tiny_assets.base_config), "recipe": recipe,
        "controls": {"model": TINY_MODEL, "max_steps_per_epoch": 2, "epochs": 1, "batch_size": 2, **controls},
        "slurm": {"nodes": 2, "gpus_per_run": 0},
        "output": {"experiment_dir": str(exp)},
    })
    assert load_mapping(exp).distributed and load_mapping(exp).slurm.nodes == 2
    (exp / expdir.LOG_DIR).mkdir(exist_ok=True)
    return exp


def _sbatch_two_tasks_on_one_node(cluster, exp: Path) -> str:
    """The generated two-node script, allocated as one node with two tasks (command-line options win)."""
    return cluster.run("sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", f"--chdir={exp}",
                       str(exp / "submit.sbatch")).stdout.strip().split(";")[0]


def _task_log(exp: Path, job: str) -> str:
    return (exp / expdir.slurm_log_file(job, "0")).read_text(errors="replace")


def _launch_lines(log: str) -> list[list[str]]:
    """The command lines run_one printed (``# <command>``) that start the training."""
    return [shlex.split(ln[2:]) for ln in log.splitlines() if ln.startswith("# srun ")]


@pytest.fixture
def two_tasks_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the jobs inherit from sbatch: one process per agent, one thread each (2 CPUs for everything)."""
    monkeypatch.setenv(runner.NPROC_ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
def test_two_tasks_train_full_finetune_distributed_across_a_rendezvous(slurm_cluster, tmp_path, tiny_assets,
                                                                       two_tasks_env) -> None:
    recipe = cpu_full_distributed(tmp_path / "recipes")
    exp = _tiny_multinode(tiny_assets, tmp_path / "exp", str(recipe))
    job = _sbatch_two_tasks_on_one_node(slurm_cluster, exp)
    slurm_cluster.wait_idle(600)
    log = _task_log(exp, job)
    record = read_status(exp, "run_000")
    assert record.state == State.COMPLETED and record.exit_code == 0, log[-3000:]
    assert record.slurm_job_id == job

    # one launch, by the batch task: srun with one torchrun agent per task, meeting on this node
    [cmd] = _launch_lines(log)
    head = launch.first_host(slurm_cluster.node)
    assert cmd == ["srun", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--kill-on-bad-exit=1",
                   sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv_id", job, "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{head}:{launch.rdzv_port(job)}",
                   str(recipe), "--config", "configs/run_000.yaml"]

    # world size 2 reached the recipe from two srun tasks (one agent each), over gloo
    ranks = [json.loads(p.read_text()) for p in sorted((exp / "runs" / "run_000" / "ranks").glob("rank_*.json"))]
    assert [r["RANK"] for r in ranks] == ["0", "1"]
    assert {r["WORLD_SIZE"] for r in ranks} == {"2"} and {r["LOCAL_WORLD_SIZE"] for r in ranks} == {"1"}
    assert sorted(r["SLURM_PROCID"] for r in ranks) == ["0", "1"]
    assert sorted(r["GROUP_RANK"] for r in ranks) == ["0", "1"]
    assert len({r["SLURM_STEP_ID"] for r in ranks}) == 1 and {r["SLURM_JOB_ID"] for r in ranks} == {job}
    assert {r["TORCHELASTIC_RUN_ID"] for r in ranks} == {job} and {r["backend"] for r in ranks} == {"gloo"}

    # it trained: two steps logged by rank 0, a checkpoint written, one metadata file for the run
    out = exp / "runs" / "run_000"
    steps = [ln for p in (out / "logs").glob("log_*.txt") for ln in p.read_text().splitlines() if ln.startswith("Step")]
    assert [s.split(" |")[0] for s in steps] == ["Step 1", "Step 2"]
    assert list((out / "epoch_0").glob("*.bin"))
    meta = json.loads((out / "metadata.json").read_text())  # written by the batch task alone, at start and end
    assert (meta["state"], meta["slurm"]["job_id"], meta["slurm"]["nodes"]) == ("completed", job, slurm_cluster.node)


@pytest.mark.slow
def test_tune_run_passes_the_rendezvous_to_torchrun(slurm_cluster, tmp_path, tiny_assets, two_tasks_env) -> None:
    # torchtune's registry recipe, through `tune run`: both ranks start and join one process group, then the
    # recipe stops where it asks the CPU for GPU memory statistics (why the training test runs a copy)
    exp = _tiny_multinode(tiny_assets, tmp_path / "exp", "full_finetune_distributed")
    job = _sbatch_two_tasks_on_one_node(slurm_cluster, exp)
    slurm_cluster.wait_idle(600)
    log = _task_log(exp, job)
    [cmd] = _launch_lines(log)
    assert cmd[5:] == [*runner.tune_command(), "run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_id", job,
                       "--rdzv_backend", "c10d", "--rdzv_endpoint",
                       f"{launch.first_host(slurm_cluster.node)}:{launch.rdzv_port(job)}",
                       "full_finetune_distributed", "--config", "configs/run_000.yaml"]
    assert "[rank1]:" in log and "Distributed training is enabled" in log, log[-3000:]
    assert "Logging memory stats is not supported on CPU devices" in log
    record = read_status(exp, "run_000")
    assert record.state == State.FAILED and record.exit_code != 0


_SLEEPER = '''"""A distributed recipe that joins its process group, says where it runs, and waits to be stopped."""
import json, os, sys, time
import torch.distributed as dist

dist.init_process_group("gloo")
out = os.environ["TCW_TEST_PIDS"]
with open(os.path.join(out, f"rank_{dist.get_rank()}.json"), "w") as f:
    json.dump({"pid": os.getpid(), "agent": os.getppid(), "world": dist.get_world_size()}, f)
dist.barrier()
time.sleep(600)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_stopping_the_task_stops_every_nodes_processes(slurm_cluster, tmp_path, tiny_assets, two_tasks_env,
                                                       monkeypatch) -> None:
    recipe = tmp_path / "recipes" / "sleeper.py"
    recipe.parent.mkdir()
    recipe.write_text(_SLEEPER)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("TCW_TEST_PIDS", str(pids))
    exp = _tiny_multinode(tiny_assets, tmp_path / "exp", str(recipe))
    job = _sbatch_two_tasks_on_one_node(slurm_cluster, exp)
    deadline = time.monotonic() + 300
    while len(list(pids.glob("rank_*.json"))) < 2:
        assert time.monotonic() < deadline, _task_log(exp, job)[-3000:]
        time.sleep(0.5)
    ranks = [json.loads(p.read_text()) for p in pids.glob("rank_*.json")]
    assert {r["world"] for r in ranks} == {2}
    # SIGTERM to the batch task alone (what a time-limit warning or our own cancel sends): it stops srun,
    # srun stops every task, torchrun every worker; the run is recorded cancelled, once
    slurm_cluster.run("scancel", "--batch", "--signal=TERM", job)
    slurm_cluster.wait_idle(120)
    record = read_status(exp, "run_000")
    assert record.state == State.CANCELLED, _task_log(exp, job)[-3000:]
    processes = [p for r in ranks for p in (r["pid"], r["agent"])]
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in processes if _alive(p)]
    assert len(_launch_lines(_task_log(exp, job))) == 1


@pytest.mark.slow
def test_first_host_agrees_with_scontrol(slurm_cluster) -> None:
    for nodelist in ("gpu[017-018]", "gpu[017,020-021],cpu01", "r[2-3]-n[07,09]", "node-[001-100]"):
        shown = slurm_cluster.run("scontrol", "show", "hostnames", nodelist).stdout
        assert launch.first_host(nodelist) == shown.split()[0]
