"""A real single-node SLURM cluster for tests: munged + slurmctld + slurmd in a temp dir.

Installs nothing (CI runs ``.ci/install_slurm.sh`` first) and touches nothing
global: the cluster has its own munge key and socket, its own ports, its own
slurm.conf and state/spool/log/pid files, so it neither needs nor disturbs a
system SLURM or munge on the same machine. Clients find it through the
``SLURM_CONF`` environment variable, which ``slurm_cluster`` sets for the
duration (subprocesses, sbatch and the jobs themselves inherit it).

    with slurm_cluster(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], check=True)
        cluster.wait_idle()

Daemons are stopped by the PIDs in their pid files, never by name. A cluster
left behind by a test session that died (SIGKILL, power loss) is stopped the
next time a cluster starts: each live cluster registers itself under
``<tmpdir>/tcw-slurm-clusters-<uid>/`` with the PID of the process that owns it.

Runs as root (daemons as root, like a real cluster) or as a plain user (all
daemons as that user; slurmd then starts only that user's jobs, which is all
tests need).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REGISTRY = Path(os.environ.get("TMPDIR", "/tmp")) / f"tcw-slurm-clusters-{os.getuid()}"
DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order: jobs' node first, munge last
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


class SlurmNotInstalled(RuntimeError):
    """The slurm/munge binaries are missing; tests that need them should skip."""


class SlurmStartError(RuntimeError):
    """The daemons are installed but the cluster did not come up (the message has their logs)."""


def find_binary(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories (daemons live there, often off a user's PATH)."""
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def missing_binaries() -> list[str]:
    """Names of the needed binaries that are not installed (empty when all are)."""
    return [b for b in (*DAEMONS, *CLIENTS) if find_binary(b) is None]


@dataclass
class SlurmCluster:
    """A running test cluster; ``env`` holds the variables clients need (``SLURM_CONF``)."""

    root: Path
    conf: Path
    node: str
    partition: str = "debug"
    max_array_size: int = 1001
    gpus: int = 0
    """Fake GPUs on the node (gres backed by /dev/null clones); 0 where they cannot be made."""
    env: dict[str, str] = field(default_factory=dict)
    started_in: float = 0.0
    """Seconds from launching munged to the node being idle."""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a client command (``cluster.run("squeue", "-h")``) against this cluster."""
        return subprocess.run(
            list(args), env={**os.environ, **self.env}, capture_output=True, text=True, check=check, timeout=60
        )

    def node_state(self) -> str:
        out = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False)
        return out.stdout.strip().lower()

    def active_jobs(self) -> list[str]:
        """Job ids (``123_4`` for array tasks) that are pending, running or finishing."""
        out = self.run("squeue", "-h", "-r", "-t", "PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
                       "-o", "%i", check=False)
        return out.stdout.split()

    def wait_idle(self, timeout: float = 600) -> None:
        """Block until no job is queued or running (polls squeue; ``sbatch --wait`` polls too slowly)."""
        deadline = time.monotonic() + timeout
        while self.active_jobs():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still active after {timeout} s: {self.active_jobs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        """Tails of the daemon logs, for failure messages."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            log = self.root / "log" / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            parts.append(f"--- {log}\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)


# ----------------------------------------------------------------------------- start / stop


@contextlib.contextmanager
def slurm_cluster(root: Path, *, max_array_size: int = 1001, gpus: int = 2,
                  timeout: float = 60, min_job_age: int = 3600,
                  max_job_count: int = 10000) -> Iterator[SlurmCluster]:
    """Start a cluster under ``root`` (created), set ``SLURM_CONF``, yield it, stop it.

    ``gpus`` fake GPUs let ``--gres=gpu:N`` jobs schedule (SLURM sets CUDA_VISIBLE_DEVICES
    and SLURM_GPUS_ON_NODE); making their device files needs root, so a plain user gets none.
    ``min_job_age``: seconds squeue keeps showing a finished job (MinJobAge; SLURM's minimum is 2):
    a small value makes squeue forget tasks as a busy cluster does after its default 300 s.
    ``max_job_count``: MaxJobCount, the jobs slurmctld holds at once, every array task counted (SLURM's
    default 10,000; sbatch waits and retries forever once it is reached).

    Raises ``SlurmNotInstalled`` when binaries are missing and ``SlurmStartError``
    when they are there but the node never becomes idle.
    """
    missing = missing_binaries()
    if missing:
        raise SlurmNotInstalled(f"SLURM binaries not installed ({', '.join(missing)}); run .ci/install_slurm.sh")
    reap_orphans()
    cluster = _configure(Path(root).resolve(), max_array_size, gpus, min_job_age, max_job_count)
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    _register(cluster)
    try:
        _start(cluster, timeout)
        yield cluster
    finally:
        try:
            _stop(cluster)
        finally:
            _unregister(cluster)
            if old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old_conf


def _free_port() -> int:
    # The kernel picks an unused port; a race with another process is possible but harmless
    # in practice (the daemon would fail to bind and the start error shows it).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> tuple[str, str]:
    """(node name, NodeName=... line) from ``slurmd -C`` — real hardware, so slurmd does not warn."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    out = subprocess.run([find_binary("slurmd"), "-C"], capture_output=True, text=True, env=env, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("NodeName="))
    return line.split()[0].split("=", 1)[1], line


def _fake_gpus(root: Path, count: int) -> int:
    """Character devices that clone /dev/null, for gres File= (gres without files leaves the node INVAL)."""
    if count <= 0:
        return 0
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    try:
        for i in range(count):
            path = dev / f"nvidia{i}"
            if not path.exists():
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:  # not root (or no CAP_MKNOD): a cluster without GPUs
        return 0
    return count


def _configure(root: Path, max_array_size: int, gpus: int, min_job_age: int = 3600,
               max_job_count: int = 10000) -> SlurmCluster:
    for sub in ("state", "spool", "log", "run", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    gpus = _fake_gpus(root, gpus)
    gres_types, node_gres = ("GresTypes=gpu\n", f" Gres=gpu:{gpus}") if gpus else ("", "")
    (root / "gres.conf").write_text(f"Name=gpu File={root}/dev/nvidia[0-{gpus - 1}]\n" if gpus else "")
    node, node_line = _node_line()
    # Daemons run as whoever runs the tests: as root like a real cluster, or (a CI runner) as a
    # plain user, where slurmd can start jobs of that same user only — all the tests need.
    user = pwd.getpwuid(os.getuid()).pw_name
    ctld_port, slurmd_port = _free_port(), _free_port()
    while slurmd_port == ctld_port:
        slurmd_port = _free_port()
    munge_socket = root / "munge" / "munge.socket"
    if len(str(munge_socket)) > 100:  # sun_path holds 108 bytes
        raise SlurmStartError(f"{root} is too deep for munge's unix socket; use a shorter directory")
    conf = root / "slurm.conf"
    conf.write_text(
        f"""# Test cluster written by tests/slurm_cluster.py
ClusterName=tcwtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge={min_job_age}
MaxArraySize={max_array_size}
MaxJobCount={max_job_count}
SchedulerParameters=sched_interval=1
{gres_types}{node_line}{node_gres} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    # A fresh key per cluster: the cluster never depends on (or leaks into) /etc/munge.
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    return SlurmCluster(root=root, conf=conf, node=node, max_array_size=max_array_size, gpus=gpus,
                        env={"SLURM_CONF": str(conf)})


def _pid_files(root: Path) -> dict[str, Path]:
    return {
        "munged": root / "munge" / "munged.pid",
        "slurmctld": root / "run" / "slurmctld.pid",
        "slurmd": root / "run" / "slurmd.pid",
    }


def _start(cluster: SlurmCluster, timeout: float) -> None:
    t0 = time.monotonic()
    root, env = cluster.root, {**os.environ, **cluster.env}
    pids = _pid_files(root)
    m = root / "munge"
    # --force: munged refuses root and group-writable temp dirs otherwise; this is a throwaway test key.
    _launch([find_binary("munged"), "--force", f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
             f"--pid-file={pids['munged']}", f"--log-file={root}/log/munged.log", f"--seed-file={m}/munged.seed"],
            pids["munged"], env, cluster)
    # -c: start from a clean state (no jobs from an earlier cluster in the same dir).
    _launch([find_binary("slurmctld"), "-c", "-f", str(cluster.conf)], pids["slurmctld"], env, cluster)
    _launch([find_binary("slurmd"), "-f", str(cluster.conf)], pids["slurmd"], env, cluster)
    deadline = time.monotonic() + timeout
    while cluster.node_state() not in ("idle", "mixed", "allocated"):
        if time.monotonic() > deadline:
            raise SlurmStartError(f"node {cluster.node} not idle after {timeout} s "
                                  f"(state {cluster.node_state()!r})\n{cluster.logs()}")
        time.sleep(0.2)
    cluster.started_in = time.monotonic() - t0


def _launch(cmd: list[str], pid_file: Path, env: dict, cluster: SlurmCluster) -> None:
    """Run a self-daemonizing daemon and wait for its pid file."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SlurmStartError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}\n{cluster.logs()}")
    deadline = time.monotonic() + 15
    while _read_pid(pid_file, Path(cmd[0]).name) is None:
        if time.monotonic() > deadline:
            raise SlurmStartError(f"{Path(cmd[0]).name} wrote no pid file {pid_file}\n{cluster.logs()}")
        time.sleep(0.05)


def _read_pid(pid_file: Path, daemon: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and really is ``daemon`` (pids get reused)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(cmdline.decode(errors="replace")).name == daemon else None


def _stop(cluster: SlurmCluster) -> None:
    # Jobs outlive slurmd (slurmstepd is its own process): cancel them first so that no
    # training keeps running after the test.
    if _read_pid(_pid_files(cluster.root)["slurmctld"], "slurmctld"):
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--user", pwd.getpwuid(os.getuid()).pw_name, check=False)
            deadline = time.monotonic() + 20
            while cluster.active_jobs() and time.monotonic() < deadline:
                time.sleep(0.3)
    stop_daemons(cluster.root)


def stop_daemons(root: Path) -> None:
    """SIGTERM each daemon of the cluster under ``root`` by pid file, SIGKILL after 10 s."""
    pids = _pid_files(root)
    for name in DAEMONS:
        pid = _read_pid(pids[name], name)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10  # slurmctld takes ~2 s to save state and exit
        while _read_pid(pids[name], name) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if _read_pid(pids[name], name) == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- leftovers


def _entry(cluster: SlurmCluster) -> Path:
    return REGISTRY / f"{cluster.root.as_posix().strip('/').replace('/', '_')}.json"


def _register(cluster: SlurmCluster) -> None:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    _entry(cluster).write_text(json.dumps({"root": str(cluster.root), "owner": os.getpid()}))


def _unregister(cluster: SlurmCluster) -> None:
    _entry(cluster).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> list[Path]:
    """Stop clusters whose owning process is gone (a killed test session); returns their roots."""
    reaped = []
    for entry in sorted(REGISTRY.glob("*.json")) if REGISTRY.is_dir() else []:
        try:
            info = json.loads(entry.read_text())
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        owner = int(info.get("owner", 0))
        if owner > 0 and _alive(owner):
            continue  # another live test session (e.g. pytest -n) owns it: leave it alone
        stop_daemons(Path(info["root"]))
        entry.unlink(missing_ok=True)
        reaped.append(Path(info["root"]))
    return reaped


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # manual use: python tests/slurm_cluster.py /tmp/mycluster  (Ctrl-C or kill stops)
    import sys
    import tempfile

    # Explicit handlers: a background job starts with SIGINT ignored, and SIGTERM would skip cleanup.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="tcw-slurm-"))
    with slurm_cluster(where) as c:
        print(f"cluster up in {c.started_in:.2f} s; export SLURM_CONF={c.conf}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
