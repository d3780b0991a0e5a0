"""How far running runs have got: step, total steps, latest loss and an ETA, for ``status`` and ``status --watch``.

Read from what a run writes anyway: its DiskLogger metric log (``Step 37 | loss:4.18 lr:...``,
``RunEntry.metric_log``), the progress bar the recipe prints in its own log (``1|37|Loss: 4.18:
37%|...| 37/100 [...]``: its total is the steps per epoch), and ``epochs`` / ``max_steps_per_epoch``
from its config. Only file tails are read, so a sweep of many long runs costs little.
Parsing is done by pure functions (``last_step``, ``first_step``, ``bar_state``, ``total_steps``,
``eta_seconds``); ``progress_of`` reads the files. ``watch`` redraws ``status`` until nothing is
active. Nothing here imports torch or torchtune (nor ``rich`` until a terminal is watched).

    >>> last_step("Step 1 | loss:6.4 lr:0.001 \\nStep 2 | loss:6.1 lr:0.0009 \\n")
    (2, 6.1)
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable

import yaml

from ..expdir import RunEntry, RunMapping, SlurmState, State, StatusRecord, metric_log_files, read_status, read_tail

_STEP = re.compile(r"^Step (\d+) \| (.*)$", re.MULTILINE)
_LOSS = re.compile(r"(?:^|\s)loss:(\S+)")
# torchtune's recipes: pbar.set_description(f"{epoch + 1}|{global_step}|Loss: {loss}") on a bar of
# total=steps per epoch; tqdm redraws it with carriage returns.
_BAR = re.compile(r"(\d+)\|(\d+)\|Loss: (\S+?):.*?\|\s*(\d+)/(\d+) \[")
_LOGGER_TIME = re.compile(r"log_(\d{9,})\.txt$")
_TAIL = 32 * 1024  # bytes: the latest lines of a log, however long it grew


@dataclass(frozen=True)
class Progress:
    """A running run's progress; any part may be unknown (None).

    >>> Progress(37, 200, 4.183, 65.0).label, Progress(37, None, None, None).label
    ('37/200', '37/?')
    """

    step: int | None
    """The latest global step it logged (steps count across epochs, as torchtune's do)."""
    total: int | None
    """Steps the run will train in all: epochs x steps per epoch."""
    loss: float | None
    eta: float | None
    """Seconds still to go, at the pace of this attempt so far."""

    @property
    def label(self) -> str:
        return "-" if self.step is None else f"{self.step}/{self.total if self.total else '?'}"

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.step / self.total) if self.step is not None and self.total else None


# ----------------------------------------------------------------------------- parsing (pure)


def last_step(text: str) -> tuple[int, float | None] | None:
    """(step, loss) of the last DiskLogger line in ``text``; None without one.

    >>> last_step("Step 9 | lr:0.1 \\n"), last_step("no steps yet")
    ((9, None), None)
    """
    found = None
    for m in _STEP.finditer(text):
        found = m
    if found is None:
        return None
    loss = _LOSS.search(found.group(2))
    return int(found.group(1)), _float(loss.group(1)) if loss else None


def first_step(text: str) -> int | None:
    """The first step a DiskLogger log holds (a resumed attempt's log starts past 1).

    >>> first_step("Step 101 | loss:3.2 \\nStep 102 | loss:3.1 \\n")
    101
    """
    m = _STEP.search(text)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class BarState:
    """The latest state of a recipe's progress bar: ``epoch|global step|Loss: x: ... n/per_epoch [``."""

    epoch: int
    step: int
    loss: float | None
    per_epoch: int


def bar_state(text: str) -> BarState | None:
    """The last progress-bar state in a run's log (carriage-return separated redraws); None without one.

    >>> bar_state("1|3|Loss: 6.42:   3%|▎ | 3/100 [00:04<01:50]\\r1|4|Loss: 6.43:   4%|▍ | 4/100 [00:04]")
    BarState(epoch=1, step=4, loss=6.43, per_epoch=100)
    """
    found = None
    for m in _BAR.finditer(text):
        found = m
    if found is None:
        return None
    return BarState(int(found.group(1)), int(found.group(2)), _float(found.group(3)), int(found.group(5)))


def total_steps(config: dict[str, Any], per_epoch: int | None) -> int | None:
    """Steps the run trains in all: ``epochs`` x steps per epoch (from its progress bar, else the config's
    ``max_steps_per_epoch``, which the recipe trains unless the data ends first); None when unknown.

    >>> total_steps({"epochs": 3, "max_steps_per_epoch": 50}, None), total_steps({"epochs": 3}, 40)
    (150, 120)
    >>> total_steps({"epochs": 3, "max_steps_per_epoch": None}, None) is None
    True
    """
    epochs = config.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        return None
    cap = config.get("max_steps_per_epoch")
    per = per_epoch if per_epoch else (cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None)
    return epochs * per if per else None


def eta_seconds(done: int, elapsed: float, remaining: int) -> float | None:
    """Seconds for ``remaining`` steps at the pace of ``done`` steps in ``elapsed`` seconds.

    >>> eta_seconds(10, 20.0, 30), eta_seconds(0, 20.0, 30)
    (60.0, None)
    """
    if done <= 0 or elapsed <= 0 or remaining < 0:
        return None
    return remaining * elapsed / done


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# ----------------------------------------------------------------------------- reading a run's files


def _head(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(size).decode(errors="replace")
    except OSError:
        return ""


def metric_log_file(run: RunEntry, started: str | None) -> Path | None:
    """The DiskLogger file of the run's attempt that started at ``started``: the newest one written since."""
    files = metric_log_files(run.metric_log, started)
    return files[-1] if files else None


def _config_of(exp: Path, run: RunEntry, rec: StatusRecord) -> dict[str, Any]:
    """The config the record's attempt trains with (plain YAML; {} when unreadable)."""
    try:
        data = yaml.load((exp / run.config_of(rec.attempt)).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def progress_of(exp_dir: str | Path, run: RunEntry, rec: StatusRecord, *, now: float | None = None) -> Progress | None:
    """How far a running run's attempt got (its record ``rec`` says running); None when it logged no step yet.

    The pace is that of this attempt: steps since its log's first one over the time from the
    log's creation (its ``log_<unix time>.txt`` name, else the record's start) to its last write.
    """
    exp = Path(exp_dir)
    metric = metric_log_file(run, rec.started)
    tail = read_tail(metric, _TAIL)
    logged = last_step(tail)
    bar = bar_state(read_tail(exp / rec.log, _TAIL)) if rec.log else None
    if logged is None and bar is None:
        return None
    step, loss = logged if logged else (None, None)
    if bar is not None and (step is None or bar.step > step):
        step, loss = bar.step, bar.loss if bar.loss is not None else loss  # the bar moves every step
    total = total_steps(_config_of(exp, run, rec), bar.per_epoch if bar else None)
    eta = None
    if metric is not None and logged is not None and total:
        first = first_step(_head(metric)) or logged[0]
        try:
            last_write = metric.stat().st_mtime
        except OSError:
            last_write = now or time.time()
        born = _LOGGER_TIME.search(metric.name)
        t0 = float(born.group(1)) if born else _timestamp(rec.started)
        if t0 is not None:
            eta = eta_seconds(logged[0] - first + 1, last_write - t0, max(0, total - (step or 0)))
    return Progress(step, total, loss, eta)


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def running(state: Any) -> bool:
    """A run state (``RunState.state``) that is training right now."""
    return state in (State.RUNNING, SlurmState.RUNNING)


def of_running(exp_dir: str | Path, mapping: RunMapping, states: list) -> dict[str, Progress]:
    """run id -> progress, for the runs of ``states`` (``slurm_state.RunState``) that are running and have
    logged a step. A run SLURM runs whose record is of another task (its setup still runs) has none yet."""
    by_id = {r.run_id: r for r in mapping.runs}
    out = {}
    for s in states:
        if not running(s.state):
            continue
        try:
            rec = read_status(exp_dir, s.run_id)
        except Exception:  # an unreadable record: status says so elsewhere
            continue
        own = f"{rec.slurm_task[0]}_{rec.slurm_task[1]}" if rec.slurm_task else None
        if rec.state != State.RUNNING or (s.job and own != s.job):
            continue
        p = progress_of(exp_dir, by_id[s.run_id], rec)
        if p is not None:
            out[s.run_id] = p
    return out


def fmt_eta(seconds: float | None) -> str:
    """``1m05s``, ``2h03m``; ``-`` when unknown.

    >>> fmt_eta(65), fmt_eta(7380), fmt_eta(None)
    ('1m05s', '2h03m', '-')
    """
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s}s" if s < 60 else (f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m")


def fmt_loss(loss: float | None) -> str:
    """The LOSS column: 4 significant digits.

    >>> fmt_loss(4.178117275238037), fmt_loss(None)
    ('4.178', '-')
    """
    return "-" if loss is None else f"{loss:.4g}"


# ----------------------------------------------------------------------------- status --watch


def active(states: list) -> bool:
    """Is any run, or any evaluation, of ``states`` queued or running?"""
    for s in states:
        if s.state == State.RUNNING or (isinstance(s.state, SlurmState) and s.state.active):
            return True
        if s.evaluation is not None and s.evaluation.active:
            return True
    return False


def change_lines(before: dict[str, tuple], states: list, progress: dict[str, Progress], clock: str) -> list[str]:
    """The plain ``status --watch`` lines: one per run whose state, evaluation or step changed since
    ``before`` (run id -> what was shown; updated in place).

    >>> from types import SimpleNamespace as S
    >>> seen = {}
    >>> change_lines(seen, [S(run_id="run_000", state=SlurmState.RUNNING, evaluation=None, job="41_0")],
    ...              {"run_000": Progress(37, 200, 4.18, 65)}, "10:00:00")
    ['10:00:00 run_000 RUNNING 41_0 step 37/200 loss 4.18 eta 1m05s']
    >>> change_lines(seen, [S(run_id="run_000", state=SlurmState.RUNNING, evaluation=None, job="41_0")],
    ...              {"run_000": Progress(37, 200, 4.18, 60)}, "10:00:05")
    []
    """
    lines = []
    for s in states:
        p = progress.get(s.run_id)
        ev = s.evaluation.label if s.evaluation is not None else None
        shown = (str(s.state), ev, p.step if p else None)
        if before.get(s.run_id) == shown:
            continue
        first = s.run_id not in before
        before[s.run_id] = shown
        if first and not active([s]):
            continue  # the first look lists what is going on, not every run that ended long ago
        parts = [clock, s.run_id, str(s.state)] + ([s.job] if s.job else [])
        if p is not None:
            parts += [f"step {p.label}", f"loss {fmt_loss(p.loss)}", f"eta {fmt_eta(p.eta)}"]
        if ev is not None:
            parts.append(f"eval {ev}")
        lines.append(" ".join(parts))
    return lines


def watch(exp_dir: str | Path, snapshot: Callable[[], tuple[list, dict[str, Progress], str]], *,
          interval: float = 10.0, out: IO[str] | None = None, tty: bool | None = None,
          sleep: Callable[[float], None] = time.sleep) -> list:
    """Redraw the runs' state every ``interval`` seconds until no run or evaluation is queued or running;
    return the last states. ``snapshot()`` gives (states, progress, the ``status`` table).

    In a terminal (``tty``), a live view: a bar per running run, the counts, then the final
    table. Otherwise plain lines, one per run whose state, evaluation or step changed since the
    previous look (none when nothing changed), and the final table at the end. Ctrl-C
    (KeyboardInterrupt) is the caller's to catch: the runs go on.
    """
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    if tty:
        return _watch_live(exp_dir, snapshot, interval, out, sleep)
    seen: dict[str, tuple] = {}
    while True:
        states, progress, table = snapshot()
        clock = datetime.now().strftime("%H:%M:%S")
        for line in change_lines(seen, states, progress, clock):
            print(line, file=out, flush=True)
        if not active(states):
            print(table, file=out, flush=True)
            return states
        sleep(interval)


def _watch_live(exp_dir: str | Path, snapshot: Callable[[], tuple[list, dict[str, Progress], str]],
                interval: float, out: IO[str], sleep: Callable[[float], None]) -> list:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out, force_terminal=True)  # the caller decided it is a terminal
    states, progress, table = snapshot()
    with Live(_view(exp_dir, states, progress, interval, console.size.height), console=console,
              auto_refresh=False, transient=True) as live:
        while active(states):
            sleep(interval)
            states, progress, table = snapshot()
            live.update(_view(exp_dir, states, progress, interval, console.size.height), refresh=True)
    console.print(table, markup=False, highlight=False)
    return states


def _view(exp_dir: str | Path, states: list, progress: dict[str, Progress], interval: float, height: int) -> Any:
    """The live view: a header with the counts, then a row (with a bar) per active run."""
    from collections import Counter

    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    counts = Counter(str(s.state) for s in states)
    header = Text(f"{Path(exp_dir).name}: " + ", ".join(f"{n} {st}" for st, n in counts.items())
                  + f"  (every {interval:g}s; Ctrl-C stops watching, the runs go on)")
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("RUN", "STATE", "PROGRESS", "STEP", "LOSS", "ETA", "JOB", "EVAL"):
        table.add_column(col, no_wrap=True)
    shown = [s for s in states if active([s])]
    room = max(1, height - 6)
    for s in shown[:room]:
        p = progress.get(s.run_id)
        bar: Any = "-"
        if p is not None:
            bar = ProgressBar(total=p.total or 100, completed=p.step or 0, width=24, pulse=p.total is None)
        table.add_row(s.run_id, str(s.state), bar, p.label if p else "-", fmt_loss(p.loss) if p else "-",
                      fmt_eta(p.eta) if p else "-", s.job or "-", s.evaluation.label if s.evaluation else "-")
    parts: list[Any] = [header, table]
    if len(shown) > room:
        parts.append(Text(f"... and {len(shown) - room} more active run(s)"))
    return Group(*parts)

