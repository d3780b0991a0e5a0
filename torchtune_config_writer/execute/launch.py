"""How a run's training starts: the command line, on one node or across the nodes of a SLURM allocation.

On one node a distributed recipe starts as ``tune run --nnodes 1 --nproc_per_node G <recipe> --config
<config>`` (``python -m torch.distributed.run ... --standalone recipe.py`` for a recipe file), with a
rendezvous of its own on a free port. A run with ``slurm.nodes > 1`` starts, inside its SLURM job,
as one ``srun`` step with one task per node, each task a torchrun agent that meets the others at a
c10d rendezvous on the head node (the first node of the allocation, where the batch script and so
``run_one`` run)::

    srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1 \\
        tune run --nnodes 2 --nproc_per_node 8 --rdzv_id 4242 --rdzv_backend c10d \\
        --rdzv_endpoint gpu017:24242 full_finetune_distributed --config configs/run_000.yaml

Only the batch task (``run_one``) records the run's status and metadata, once; the nodes run
nothing of ours but the recipe. Stopping ``srun`` (SIGTERM) makes it signal every task on every
node, and ``--kill-on-bad-exit`` ends the whole step when one node's agent fails, instead of
leaving the others waiting at the rendezvous until it times out.

Everything here is a pure function of its arguments (the environment passed in as a mapping), but
for ``head_node_of``'s last resort, this machine's own name.

    >>> env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "2",
    ...        "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NODELIST": "gpu[017-018]"}
    >>> spread = multinode_for(2, env, head="gpu017")
    >>> launch_command("full_finetune_distributed", "configs/run_000.yaml", distributed=True,
    ...                nproc_per_node=8, multinode=spread, tune=["tune"], python="python")[:5]
    ['srun', '--nodes=2', '--ntasks=2', '--ntasks-per-node=1', '--kill-on-bad-exit=1']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..expdir import RunEntry, RunMapping, is_recipe_file

#: Environment variable naming the rendezvous host instead of the allocation's first node (e.g. set in
#: ``slurm.setup`` as ``export TORCHTUNE_CONFIG_WRITER_RDZV_HOST=$(hostname -i)`` where node names do not
#: resolve to the network the nodes talk over).
RDZV_HOST_ENV = "TORCHTUNE_CONFIG_WRITER_RDZV_HOST"

#: Rendezvous ports are ``RDZV_PORT_BASE + job id % RDZV_PORT_SPAN``: below Linux's ephemeral range
#: (32768 and up), so an outgoing connection does not hold the port, and different for array tasks
#: that start together (their job ids are consecutive) on the same head node.
RDZV_PORT_BASE = 20000
RDZV_PORT_SPAN = 10000


@dataclass(frozen=True)
class MultiNode:
    """How a run spreads over its SLURM allocation: one torchrun agent per ``srun`` task."""

    agents: int
    """torchrun agents (``--nnodes``): the allocation's tasks, one per node as the script asks."""
    nodes: int
    """Nodes the ``srun`` step spans."""
    tasks_per_node: int
    rdzv_id: str
    """The SLURM job id (an array task's own), so two runs never join one rendezvous."""
    host: str
    """Where the agents meet: the head node (where ``run_one`` runs)."""
    port: int
    cpus_per_task: str | None = None
    """The job's ``--cpus-per-task``, repeated for ``srun`` (since SLURM 22.05 it does not inherit it)."""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def rdzv_port(job_id: str | int) -> int:
    """The rendezvous port of a job, from its id: jobs running at once (consecutive ids) get different ones.

    >>> rdzv_port(4242), rdzv_port(14242), rdzv_port(4243)
    (24242, 24242, 24243)
    """
    return RDZV_PORT_BASE + int(job_id) % RDZV_PORT_SPAN


def first_host(nodelist: str) -> str | None:
    """The first host of a SLURM host list, as ``scontrol show hostnames LIST | head -1`` names it.

    Read here rather than by running ``scontrol``, which needs the cluster's configuration (and waits up
    to a minute for a missing one) on every node that launches.

    >>> first_host("gpu[017-018,020],cpu01"), first_host("a100-n3"), first_host("r[2-3]-n[07,09]")
    ('gpu017', 'a100-n3', 'r2-n07')
    """
    out, i = [], 0
    while i < len(nodelist):
        c = nodelist[i]
        if c == ",":
            break
        if c == "[":
            close = nodelist.find("]", i)
            if close < 0:
                return None
            first = nodelist[i + 1:close].split(",", 1)[0].split("-", 1)[0]
            out.append(first)
            i = close + 1
            continue
        out.append(c)
        i += 1
    host = "".join(out).strip()
    return host or None


def head_node_of(env: Mapping[str, str]) -> str:
    """The rendezvous host of the job whose environment is ``env``.

    ``$TORCHTUNE_CONFIG_WRITER_RDZV_HOST`` when set; else the first node of ``$SLURM_JOB_NODELIST`` (SLURM
    runs the batch script, so ``run_one``, on it); else this node's SLURM name, else its host name.

    >>> head_node_of({"SLURM_JOB_NODELIST": "gpu[017-018]", "SLURMD_NODENAME": "gpu017"})
    'gpu017'
    """
    if env.get(RDZV_HOST_ENV):
        return env[RDZV_HOST_ENV]
    host = first_host(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")
    return host or env.get("SLURMD_NODENAME") or os.uname().nodename


def _count(value: str | None) -> int | None:
    """A SLURM count variable as a number: ``2`` -> 2; ``2(x3)`` (SLURM_TASKS_PER_NODE) -> 2; else None."""
    if not value:
        return None
    head = value.split("(", 1)[0].split(",", 1)[0]
    return int(head) if head.isdigit() else None


def planned_nodes(mapping: RunMapping, run: RunEntry) -> int:
    """The nodes a run asked for (``slurm.nodes``, its own where it differs)."""
    return int(run.resources.get("nodes", mapping.slurm.nodes))


def multinode_for(nodes: int, env: Mapping[str, str], head: str | None = None) -> MultiNode | None:
    """How a run planned for ``nodes`` nodes spreads over the SLURM job of ``env``; None: on one node.

    None outside a SLURM job (a local ``run`` trains on this machine alone) and for one-node runs. Inside
    one, the allocation decides: one agent per task (``$SLURM_NTASKS``; the script asks one per node), on
    ``$SLURM_JOB_NUM_NODES`` nodes. An allocation of a single task (an ``sbatch --nodes=1`` override) runs
    on one node as usual. ``head`` (default: ``head_node_of(env)``) is where the agents meet.

    >>> m = multinode_for(2, {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "2"}, head="n1")
    >>> (m.agents, m.nodes, m.tasks_per_node, m.endpoint)
    (2, 2, 1, 'n1:20007')
    >>> multinode_for(2, {}) is None
    True
    """
    job = env.get("SLURM_JOB_ID")
    if nodes <= 1 or not job:
        return None
    alloc_nodes = _count(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")) or nodes
    tasks_per_node = _count(env.get("SLURM_NTASKS_PER_NODE")) or _count(env.get("SLURM_TASKS_PER_NODE")) or 1
    agents = _count(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS")) or alloc_nodes * tasks_per_node
    if agents <= 1:
        return None
    return MultiNode(agents=agents, nodes=alloc_nodes, tasks_per_node=tasks_per_node, rdzv_id=job,
                     host=head or head_node_of(env), port=rdzv_port(job),
                     cpus_per_task=env.get("SLURM_CPUS_PER_TASK") or None)


def srun_prefix(spread: MultiNode) -> list[str]:
    """The ``srun`` that starts one torchrun agent per task of the allocation.

    >>> srun_prefix(MultiNode(2, 2, 1, "7", "n1", 20007, "16"))
    ['srun', '--nodes=2', '--ntasks=2', '--ntasks-per-node=1', '--kill-on-bad-exit=1', '--cpus-per-task=16']
    """
    cmd = ["srun", f"--nodes={spread.nodes}", f"--ntasks={spread.agents}",
           f"--ntasks-per-node={spread.tasks_per_node}", "--kill-on-bad-exit=1"]
    if spread.cpus_per_task:
        cmd.append(f"--cpus-per-task={spread.cpus_per_task}")
    return cmd


def torchrun_args(nproc_per_node: int | str, spread: MultiNode | None) -> list[str]:
    """torchrun's options: one node (the caller adds ``--standalone`` where needed), or a c10d rendezvous.

    >>> torchrun_args(8, None)
    ['--nnodes', '1', '--nproc_per_node', '8']
    >>> torchrun_args(8, MultiNode(2, 2, 1, "7", "n1", 20007))[:4]
    ['--nnodes', '2', '--nproc_per_node', '8']
    """
    if spread is None:
        return ["--nnodes", "1", "--nproc_per_node", str(nproc_per_node)]
    return ["--nnodes", str(spread.agents), "--nproc_per_node", str(nproc_per_node),
            "--rdzv_id", spread.rdzv_id, "--rdzv_backend", "c10d", "--rdzv_endpoint", spread.endpoint]


def launch_command(recipe: str, config: str, *, distributed: bool, nproc_per_node: int | str,
                   multinode: MultiNode | None, tune: Sequence[str], python: str) -> list[str]:
    """The command line that trains ``config`` with ``recipe`` (a registry name or a recipe file).

    ``tune`` is the ``tune`` to call (``[".../bin/tune"]``), ``python`` the interpreter for recipe files
    (``tune run`` cannot run a recipe given by path). ``multinode`` applies to distributed recipes only.

    >>> launch_command("lora_finetune_single_device", "c.yaml", distributed=False, nproc_per_node="auto",
    ...                multinode=None, tune=["tune"], python="python")
    ['tune', 'run', 'lora_finetune_single_device', '--config', 'c.yaml']
    >>> launch_command("/r/mine.py", "c.yaml", distributed=True, nproc_per_node=2, multinode=None,
    ...                tune=["tune"], python="python")
    ['python', '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2', '--standalone', '/r/mine.py', '--config', 'c.yaml']
    """
    spread = multinode if distributed else None
    torchrun = torchrun_args(nproc_per_node, spread)
    args = ["--config", config]
    if is_recipe_file(recipe):
        if not distributed:
            return [python, recipe, *args]
        # one node: a free port of its own (--standalone), as runs sharing a node must not collide
        cmd = [python, "-m", "torch.distributed.run", *torchrun, *([] if spread else ["--standalone"]), recipe, *args]
    elif distributed:
        # torchrun options go before the recipe name; without --rdzv_endpoint tune run adds --standalone itself
        cmd = [*tune, "run", *torchrun, recipe, *args]
    else:
        return [*tune, "run", recipe, *args]
    return srun_prefix(spread) + cmd if spread else cmd
