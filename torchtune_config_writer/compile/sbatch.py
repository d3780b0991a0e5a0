"""Write ``submit.sbatch``, the SLURM job-array script of an experiment directory (one per set of resources),
and ``eval.sbatch``, the evaluation one, when its runs are evaluated.

``generate`` resolves the experiment's ``slurm:`` section into the ``SlurmPlan``
recorded in run_mapping.yaml, and each run's own resources where they differ
(``plan_resources``), and writes a script per group of runs with equal
resources (``write_submit_scripts``); ``execute/submit.py`` submits them, reading
settings from run_mapping.yaml, never from a script. A script runs one
array task per run: task ``T`` of an array submitted with offset ``O`` (the
script's argument) runs the run whose index is ``T + O`` (``expdir.plan_arrays``).
An evaluation script (``eval.sbatch``) is the same array for the evaluated runs, whose
task ``T`` evaluates that same run; ``submit`` makes each of its tasks wait for the
training task with the same id (``--dependency=aftercorr``).
Every ``slurm:`` setting is checked before it reaches a ``#SBATCH`` line
(``SlurmSettingsError``), and the script is checked with ``bash -n``.

    >>> plan, own, note, _ = plan_resources(SlurmSettings(time="4:00:00"), [("run_000", "cpu", None), ("run_001", "cuda", None)])
    >>> plan.gpus_per_run, own
    (0, [{}, {'gpus_per_run': 1}])
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .. import __version__
from ..atomic import atomic_write_text
from ..errors import SlurmError, SlurmSettingsError
from ..expdir import LOG_DIR, MAPPING_FILE, SLURM_LOG_PATTERN, RunMapping, ScriptGroup, SlurmPlan, plan_arrays, script_groups
from .schema import SlurmSettings


# ----------------------------------------------------------------------------- #SBATCH values

# Characters that sbatch's #SBATCH parser takes literally outside quotes.
_SBATCH_SAFE = re.compile(r"[A-Za-z0-9_.,:=+@%/^~-]*")

# Options submit.sbatch sets itself, or that have their own key in the slurm: section.
_MANAGED_OPTIONS = {
    "--array": "it is built from the runs and slurm.max_concurrent", "-a": "--array is built from the runs",
    "--output": "logs go to logs/%A_%a.out (Appendix B)", "-o": "logs go to logs/%A_%a.out (Appendix B)",
    "--chdir": "tasks run in the experiment directory", "-D": "tasks run in the experiment directory",
    "--job-name": "use slurm.job_name", "-J": "use slurm.job_name",
    "--partition": "use slurm.partition", "-p": "use slurm.partition",
    "--account": "use slurm.account", "-A": "use slurm.account",
    "--qos": "use slurm.qos", "-q": "use slurm.qos",
    "--time": "use slurm.time", "-t": "use slurm.time",
    "--nodes": "use slurm.nodes", "-N": "use slurm.nodes",
    "--cpus-per-task": "use slurm.cpus_per_task", "-c": "use slurm.cpus_per_task",
    "--mem": "use slurm.mem", "--constraint": "use slurm.constraint", "-C": "use slurm.constraint",
    "--wait": "submit polls; --wait would block it", "-W": "submit polls; --wait would block it",
    "--parsable": "submit passes it itself",
}


def sbatch_value(value: object, key: str) -> str:
    """``value`` written for a ``#SBATCH --opt=VALUE`` line, or ``SlurmSettingsError``.

    A ``#SBATCH`` line is read by sbatch, not by a shell, so shell quoting does
    not apply. sbatch splits on unquoted whitespace (even after a backslash),
    ends the line at an unescaped ``#`` and takes ``\\x`` as a literal ``x``; so a
    value with anything but plain characters goes inside double quotes with
    ``\\``, ``"``, ``'`` and ``#`` backslash-escaped. That reads back the same
    in old (quotes: ``"`` only) and new sbatch parsers. Newlines and other
    control characters cannot be carried at all and are refused.

    >>> print(sbatch_value("my job #1", "job_name"))
    "my job \\#1"
    """
    text = str(value)
    if not text:
        raise SlurmSettingsError(f"{key} is empty; remove it or give a value")
    bad = sorted({c for c in text if not c.isprintable()})
    if bad:
        raise SlurmSettingsError(
            f"{key} = {text!r} contains {', '.join(repr(c) for c in bad)}: a #SBATCH line cannot hold "
            "newlines, tabs or other control characters; remove them"
        )
    if _SBATCH_SAFE.fullmatch(text):
        return text
    return '"' + "".join("\\" + c if c in '\\"\'#' else c for c in text) + '"'


def sbatch_split(line: str) -> list[str]:
    """The arguments sbatch reads from the text after ``#SBATCH`` (mirrors its parser).

    Used to check ``extra_sbatch`` lines before sbatch sees them.

    >>> sbatch_split('--comment="two words" --exclusive # a comment')
    ['--comment=two words', '--exclusive']
    """
    args, cur, quote, escaped, have = [], [], "", False, False
    for c in line:
        if c.isspace() and not quote:
            # sbatch checks for whitespace before escapes: an escaped blank still ends the word.
            if have or cur:
                args.append("".join(cur))
            cur, have, escaped = [], False, False
        elif escaped:
            cur.append(c)
            escaped, have = False, True
        elif c == "\\":
            escaped = True
        elif quote:
            if c == quote:
                quote = ""
            else:
                cur.append(c)
        elif c in "\"'":
            quote, have = c, True
        elif c == "#":
            break
        else:
            cur.append(c)
            have = True
    if quote:
        raise SlurmSettingsError(f"unmatched {quote} in #SBATCH {line}")
    if have or cur:
        args.append("".join(cur))
    return args


def sbatch_extra_line(line: str) -> str:
    """Check one ``slurm.extra_sbatch`` entry (``--exclusive``, ``#SBATCH --mail-type=END``); return its text.

    >>> sbatch_extra_line("#SBATCH --exclusive")
    '--exclusive'
    """
    text = str(line).strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH"):].strip()
    where = f"slurm.extra_sbatch entry {line!r}"
    if any(not c.isprintable() for c in text):
        raise SlurmSettingsError(f"{where} contains a newline or control character; give one option per entry")
    args = sbatch_split(text)
    if not args or not args[0].startswith("-"):
        raise SlurmSettingsError(f"{where} is not an sbatch option; write e.g. --exclusive or --mail-type=END")
    for arg in args:
        opt = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if opt in _MANAGED_OPTIONS:
            raise SlurmSettingsError(f"{where} sets {opt}, which submit.sbatch manages: {_MANAGED_OPTIONS[opt]}")
    return text


def _comment(text: object) -> str:
    """``text`` made safe for a ``#`` comment line (no line breaks, no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


# ----------------------------------------------------------------------------- the script


def default_setup() -> list[str]:
    """Shell lines that activate the Python environment running now (the one ``generate`` ran in).

    >>> default_setup()                                   # doctest: +SKIP
    ["source /work/main/.venv/bin/activate"]
    """
    prefix = Path(sys.prefix)
    activate = prefix / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():  # a venv
        return [f"source {shlex.quote(str(activate))}"]
    return [f'export PATH={shlex.quote(str(prefix / "bin"))}:"$PATH"']


#: ``slurm:`` settings that may differ between runs (each set of values gets its own job-array script).
RESOURCES = ("gpus_per_run", "nodes", "partition", "account", "qos", "time", "cpus_per_task", "mem", "constraint")


def plan_resources(settings: SlurmSettings, runs: list[tuple[str, object, SlurmSettings | None]],
                   locate: Callable[[str, str], str] | None = None,
                   ) -> tuple[SlurmPlan, list[dict[str, object]], str, SlurmSettings]:
    """What run_mapping.yaml records of the ``slurm:`` section, and the settings the scripts are written from.

    ``runs`` gives each run's id, ``device`` and its settings when ``slurm:``
    holds expressions (None: ``settings`` as written). Without
    ``slurm.gpus_per_run``, a run whose device is cpu asks SLURM for no GPU
    (else 1). Returns the plan (the first run's resources), each run's resources
    where they differ from it, a note on what was defaulted, and the first
    run's settings (every setting that is not a resource must be the same for
    all runs: one submission has one job name, one setup...).

    >>> plan, own, note, _ = plan_resources(SlurmSettings(max_concurrent=2), [("run_000", "cpu", None), ("run_001", "cpu", None)])
    >>> plan.gpus_per_run, own, note
    (0, [{}, {}], "slurm.gpus_per_run: 0, because every run's device is cpu (set slurm.gpus_per_run to ask for GPUs anyway)")
    """
    locate = locate or (lambda section, key: section)
    first = (runs[0][2] if runs else None) or settings
    shared = first.model_dump(exclude=set(RESOURCES))
    per_run = []
    for run_id, device, own in runs:
        own = own or settings
        if own is not first:
            differs = [k for k, v in own.model_dump(exclude=set(RESOURCES)).items() if v != shared[k]]
            if differs:
                key = differs[0]
                raise SlurmSettingsError(
                    f"{locate('slurm', key)}: slurm.{key} is {shared[key]!r} for {runs[0][0]} but {getattr(own, key)!r} "
                    f"for {run_id}; one submission has one {key}: only resources may differ per run "
                    f"({', '.join(RESOURCES)})"
                )
        values = {k: getattr(own, k) for k in RESOURCES}
        if values["gpus_per_run"] is None:
            values["gpus_per_run"] = 0 if str(device) == "cpu" else 1
        per_run.append(values)
    base = per_run[0] if per_run else {k: getattr(settings, k) for k in RESOURCES} | {"gpus_per_run": settings.gpus_per_run or 1}
    plan = SlurmPlan(max_concurrent=first.max_concurrent, max_array_size=first.max_array_size,
                     max_submit=first.max_submit, time_safety=first.time_safety, requeue=first.requeue,
                     signal_seconds=first.signal_seconds, max_requeues=first.max_requeues, **base)
    note = ""
    if settings.gpus_per_run is None and "gpus_per_run" not in _expression_keys(runs) and per_run \
            and all(r["gpus_per_run"] == 0 for r in per_run):
        note = ("slurm.gpus_per_run: 0, because every run's device is cpu "
                "(set slurm.gpus_per_run to ask for GPUs anyway)")
    if plan.requeue:  # a warning too close to a time limit is moved earlier (Appendix J.4): say so
        shorter = {warning_lead(t, plan.signal_seconds)[1] for t in {r["time"] for r in per_run} | {plan.time}}
        note = "; ".join(filter(None, [note, *sorted(shorter - {""})]))
    return plan, [{k: v for k, v in r.items() if v != base[k]} for r in per_run], note, first


def check_nodes(recipe: str, distributed: bool, plan: SlurmPlan, resources: list[dict[str, object]],
                run_ids: list[str], locate: Callable[[str, str], str] | None = None) -> None:
    """Refuse ``slurm.nodes > 1`` for a recipe that trains on one device (``SlurmSettingsError``).

    Only a distributed recipe spreads over nodes (srun + torchrun, Appendix J.7); a single-device run
    would hold the other nodes idle for its whole length.

    >>> check_nodes("lora_finetune_single_device", False, SlurmPlan(nodes=2), [{}], ["run_000"])
    Traceback (most recent call last):
    ...
    torchtune_config_writer.errors.SlurmSettingsError: slurm: slurm.nodes is 2 for run_000, but lora_finetune_single_device trains on one device, so the other node(s) would sit idle; set nodes: 1 (or leave it out), or use a distributed recipe (lora_finetune_distributed) to train across nodes
    """
    if distributed:
        return
    locate = locate or (lambda section, key: section)
    for run_id, own in zip(run_ids, resources):
        nodes = own.get("nodes", plan.nodes)
        if isinstance(nodes, int) and nodes > 1:
            twin = recipe.replace("single_device", "distributed") if recipe.endswith("_single_device") else None
            raise SlurmSettingsError(
                f"{locate('slurm', 'nodes')}: slurm.nodes is {nodes} for {run_id}, but {recipe} trains on one "
                "device, so the other node(s) would sit idle; set nodes: 1 (or leave it out), or use a distributed "
                f"recipe{f' ({twin})' if twin else ''} to train across nodes"
            )


def _expression_keys(runs: list[tuple[str, object, SlurmSettings | None]]) -> set[str]:
    return {k for _, _, own in runs if own is not None for k in own.model_fields_set}


def time_limit_seconds(text: object) -> int | None:
    """A ``--time`` value (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in seconds;
    None for no limit (None, ``0``), ``auto`` or what SLURM would not read.

    >>> time_limit_seconds("90"), time_limit_seconds("1:30:00"), time_limit_seconds("1-2"), time_limit_seconds("auto")
    (5400, 5400, 93600, None)
    """
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text or "").strip())
    if not m:
        return None
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = (a * 60 + b) * 60 + c
    else:  # MM[:SS]
        seconds = a * 60 + (b or 0)
    return seconds or None


def warning_lead(time: object, signal_seconds: int) -> tuple[int, str]:
    """Seconds before the time limit ``time`` that the warning signal comes, and a note when that is less
    than ``slurm.signal_seconds``: a warning more than half the limit before it would requeue a run
    before it got anywhere, so it comes at half the limit instead. ``auto``: as asked (submit adds the
    lead to each estimated limit, Appendix J.5).

    >>> warning_lead("4:00:00", 300)
    (300, '')
    >>> warning_lead("5", 300)[0]
    150
    """
    limit = time_limit_seconds(time)
    if limit is None or signal_seconds <= limit // 2:
        return signal_seconds, ""
    lead = max(1, limit // 2)
    return lead, (f"slurm.signal_seconds: the warning comes {lead} s (not {signal_seconds} s) before the time limit "
                  f"{time}, half of it, so that a run gets somewhere before it is requeued")


def _requeue_lines(plan: SlurmPlan) -> list[str]:
    """With a time limit and ``slurm.requeue``: a warning (SIGUSR1 to the job script, which execs the runner)
    ``signal_seconds`` before the limit, a task SLURM may requeue, and a log that a requeued task appends to
    (SLURM truncates ``logs/%A_%a.out`` on a requeue otherwise). Appendix J.4."""
    if not plan.requeue or (plan.time is None or (not plan.time_auto and time_limit_seconds(plan.time) is None)):
        return []
    return [f"--signal=B:USR1@{warning_lead(plan.time, plan.signal_seconds)[0]}", "--requeue", "--open-mode=append"]


def _sbatch_lines(plan: SlurmPlan, settings: SlurmSettings, *, requeue: bool = True) -> list[str]:
    lines = []
    for key, opt in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos"),
                     ("time", "--time"), ("cpus_per_task", "--cpus-per-task"), ("mem", "--mem"),
                     ("constraint", "--constraint")):
        value = getattr(plan, key)
        if key == "time" and plan.time_auto:
            continue  # submit gives each array its estimated limit on the command line (Appendix J.5)
        if value is not None:
            lines.append(f"{opt}={sbatch_value(value, f'slurm.{key}')}")
    if requeue:  # training tasks only: an evaluation has no epoch to resume from
        lines += _requeue_lines(plan)
    if plan.nodes > 1:
        lines.append("--ntasks-per-node=1")  # one torchrun agent per node; --gres below is per node (J.7)
    if plan.gpus_per_run > 0:
        lines.append(f"--gres=gpu:{plan.gpus_per_run}")
    lines += [sbatch_extra_line(x) for x in settings.extra_sbatch]
    return lines


def _check_bash(text: str, what: str) -> None:
    """``bash -n`` on ``text``: a setup line with an open quote would otherwise swallow the script."""
    bash = shutil.which("bash")
    if not bash:
        return
    proc = subprocess.run([bash, "-n"], input=text, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SlurmSettingsError(f"{what} is not valid bash: {proc.stderr.strip()}")


def render_submit_script(mapping: RunMapping, settings: SlurmSettings | None = None,
                         group: ScriptGroup | None = None) -> str:
    """The text of a job-array script for the runs of ``group`` (default: the first) of ``mapping``.

    Resources come from the group (``mapping.slurm`` with the group's own); the
    job name, extra ``#SBATCH`` lines, setup lines and stagger from ``settings``.
    Raises ``SlurmSettingsError`` for a setting that cannot go into the script.
    Nothing is written.
    """
    return _render("submit.sbatch.j2", mapping, settings, group or script_groups(mapping)[0],
                   len(script_groups(mapping)), job_suffix="")


def render_eval_script(mapping: RunMapping, settings: SlurmSettings | None = None,
                       group: ScriptGroup | None = None) -> str:
    """The text of an evaluation job-array script (``eval.sbatch``) for ``group`` (default: the first).

    Like ``render_submit_script`` (same setup, same checks), but its tasks run
    ``task --eval`` and its job is named ``<job_name>-eval``; the group's resources are
    the evaluation ones (``expdir.script_groups(mapping, evaluation=True)``).

    >>> "task --eval" in render_eval_script(mapping)                        # doctest: +SKIP
    True
    """
    groups = script_groups(mapping, evaluation=True)
    if group is None and not groups:
        raise SlurmError("no run of the experiment is evaluated, so there is no evaluation script to write")
    return _render("eval.sbatch.j2", mapping, settings, group or groups[0], len(groups), job_suffix="-eval")


def _render(template: str, mapping: RunMapping, settings: SlurmSettings | None, group: ScriptGroup,
            groups: int, *, job_suffix: str) -> str:
    import jinja2  # only `generate` renders; keep importing this module light

    settings = settings or SlurmSettings()
    plan = group.resources
    indices = list(group.indices)
    if not indices:
        raise SlurmError("the experiment has no runs, so there is nothing to put in a job array")
    chunks = plan_arrays(indices, plan.max_array_size)
    if settings.setup is None:
        setup, setup_origin, python = default_setup(), "default: the environment generate ran in", sys.executable
    else:
        setup, setup_origin, python = [str(s) for s in settings.setup], "slurm.setup", "python3"
        if any("\0" in s for s in setup):
            raise SlurmSettingsError("slurm.setup contains a NUL character")
        _check_bash("\n".join(setup) + "\n", "slurm.setup")
    k = plan.max_concurrent
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
    )
    text = env.get_template(template).render(
        experiment_comment=_comment(mapping.experiment_name),
        num_runs=len(indices),
        script=group.script,
        groups=groups,
        tool_version=__version__,
        job_name=sbatch_value((settings.job_name or mapping.experiment_name) + job_suffix, "slurm.job_name"),
        array=chunks[0].spec(k),
        log_pattern=SLURM_LOG_PATTERN,
        log_dir=LOG_DIR,
        mapping_file=MAPPING_FILE,
        nodes=plan.nodes,
        sbatch_lines=_sbatch_lines(plan, settings, requeue=template == "submit.sbatch.j2"),
        setup=setup,
        setup_origin=setup_origin,
        stagger_ms=int(round(settings.stagger_seconds * 1000)),
        stagger_slot=f"SLURM_ARRAY_TASK_ID % {k}" if k else "SLURM_ARRAY_TASK_ID",
        python=shlex.quote(python),
    )
    _check_bash(text, f"the generated {group.script}")
    return text


def write_submit_scripts(exp_dir: Path, mapping: RunMapping, settings: SlurmSettings | None = None) -> list[Path]:
    """Render and (atomically) write one job-array script per group of runs with equal resources.

    ``submit.sbatch`` always; ``submit_1.sbatch``... when runs ask for different
    resources (``expdir.script_groups``); and, when runs are evaluated,
    ``eval.sbatch`` (``eval_1.sbatch``...) per group of evaluated runs. The
    scripts name no path (tasks start in the experiment directory, which
    ``submit`` passes as ``--chdir``), so they may be written into a temporary
    directory that is renamed into place afterwards.

    >>> write_submit_scripts(Path("outputs/demo"), mapping, SlurmSettings(job_name="demo"))   # doctest: +SKIP
    [PosixPath('outputs/demo/submit.sbatch'), PosixPath('outputs/demo/eval.sbatch')]
    """
    # Render every script before writing any: a setting refused for one leaves no half-written set.
    texts = [(group.script, render_submit_script(mapping, settings, group)) for group in script_groups(mapping)]
    texts += [(group.script, render_eval_script(mapping, settings, group))
              for group in script_groups(mapping, evaluation=True)]
    paths = []
    for name, text in texts:
        path = Path(exp_dir) / name
        atomic_write_text(path, text, mode=0o755)
        paths.append(path)
    return paths
