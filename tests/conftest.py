"""Shared fixtures.

- ``hf_cache`` (session, autouse): HF_HOME / HF_DATASETS_CACHE in a temporary
  directory, because `datasets` writes a cache when a run loads its JSON data;
  the hub offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE).
- ``tiny_assets`` (session): the offline tokenizer, model, data and example configs.
- ``make_experiment_dir``: writes an experiment directory by hand through the
  contract (``expdir``), with no generator.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from ruamel.yaml import YAML

from torchtune_config_writer import expdir


@pytest.fixture(scope="session", autouse=True)
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point Hugging Face caches (inherited by `tune run` children) at a session temp dir."""
    root = tmp_path_factory.mktemp("hf_home")
    saved = {k: os.environ.get(k) for k in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ["HF_HOME"] = str(root)
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets")
    # no hub here: the evaluators must never wait on a download (the tests make every file they read)
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory):
    """The tiny assets (built once per session, a few seconds)."""
    from torchtune_config_writer.demo.assets import build_tiny_assets

    return build_tiny_assets(tmp_path_factory.mktemp("tiny_assets"))


def _set_dotted(node: Any, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value


def write_experiment_dir(
    exp_dir: Path,
    base_config: Path,
    runs: list[dict[str, Any]],
    *,
    recipe: str = "lora_finetune_single_device",
    validation: list[str] | None = None,
    name: str = "handmade",
    slurm: expdir.SlurmPlan | None = None,
    names: list[str | None] | None = None,
    seeds: list[int] | None = None,
    configurations: list[int] | None = None,
    derived: list[dict[str, Any]] | None = None,
) -> Path:
    """Write an Appendix B experiment directory: one config per entry of ``runs`` (dotted key -> value).

    Only the contract is used (expdir's types and writer), plus the compile
    side's one helper that resolves where a config's metrics go. Every run gets
    its own output_dir (exp_dir/runs/run_NNN); ``validation`` gives each run's
    validation state (default all ``passed``); ``slurm`` the recorded SLURM settings.

    The experiment language's per-run fields, each one entry per run: ``names``
    (run_name), ``seeds`` (the ``seeds:`` axis: sets the config's ``seed``, is the
    last variable, marks the mapping seeded), ``configurations`` (default: runs
    with equal ``runs`` entries share one when seeded, else one each) and
    ``derived`` (dotted path -> value, also set in the config).
    """
    from torchtune_config_writer.compile.schema import to_plain
    from torchtune_config_writer.compile.writer import metric_log

    yaml = YAML(typ="rt")
    (exp_dir / expdir.CONFIGS_DIR).mkdir(parents=True, exist_ok=True)
    variables = sorted({k for r in runs for k in r}) + (["seed"] if seeds is not None else [])
    states = validation or ["passed"] * len(runs)
    computed = derived or [{} for _ in runs]
    numbers = configurations or _configuration_numbers(runs, seeded=seeds is not None)
    table = []
    for i, overrides in enumerate(runs):
        rid = expdir.run_id(i)
        params = {**overrides, **({"seed": seeds[i]} if seeds is not None else {})}
        cfg = yaml.load(base_config.read_text())
        out = exp_dir / expdir.RUNS_DIR / rid
        cfg["output_dir"] = str(out)
        for key, value in {**params, **computed[i]}.items():
            _set_dotted(cfg, key, value)
        path = exp_dir / expdir.config_file(rid)
        with open(path, "w") as f:
            yaml.dump(cfg, f)
        table.append(expdir.RunEntry(
            run_id=rid, index=i, config=expdir.config_file(rid),
            config_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            output_dir=str(out), parameters=params, validation=expdir.Validation(states[i]),
            metric_log=metric_log(to_plain(cfg), out, exp_dir),
            name=names[i] if names else None, derived=dict(computed[i]),
            seed=seeds[i] if seeds is not None else None, configuration=numbers[i],
        ))
    expdir.write_mapping(exp_dir, expdir.RunMapping(
        experiment_name=name, recipe=recipe, distributed=False, base_config=None,
        base_config_file=str(base_config), created="2026-01-01T00:00:00", tool_version="test",
        variables=tuple(variables),
        validation=expdir.Validation.FAILED if "failed" in states else expdir.Validation.PASSED,
        slurm=slurm or expdir.SlurmPlan(gpus_per_run=0), runs=tuple(table),
        derived=tuple(dict.fromkeys(k for d in computed for k in d)), seeded=seeds is not None,
    ))
    return exp_dir


def _configuration_numbers(runs: list[dict[str, Any]], *, seeded: bool) -> list[int]:
    """As the compile side numbers them: dense, in run order; with seeds, equal axis values share a number."""
    if not seeded:
        return list(range(len(runs)))
    first: dict[str, int] = {}
    return [first.setdefault(repr(sorted(r.items())), len(first)) for r in runs]


@pytest.fixture
def make_experiment_dir(tmp_path: Path, tiny_assets) -> Callable[..., Path]:
    """Factory: ``make_experiment_dir(runs=[{"optimizer.lr": 1e-3}, ...], name=...)`` -> experiment dir."""
    counter = iter(range(1000))

    def make(runs: list[dict[str, Any]], **kwargs: Any) -> Path:
        return write_experiment_dir(tmp_path / f"exp{next(counter)}", tiny_assets.base_config, runs, **kwargs)

    return make


# ----------------------------------------------------------------------------- SLURM (tests/slurm_cluster.py)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node SLURM (munged, slurmctld, slurmd) for the session, with SLURM_CONF pointing at it.

    Skips only when the slurm/munge binaries are not installed (CI runs
    .ci/install_slurm.sh); any other start problem fails with the daemons' logs.
    """
    import slurm_cluster as sc  # tests/ is on sys.path (rootdir conftest)

    missing = sc.missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed (missing {', '.join(missing)}); run .ci/install_slurm.sh")
    with sc.slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def trained_experiment(tmp_path_factory: pytest.TempPathFactory, tiny_assets):
    """A 3-run experiment really trained once per session (2 at a time): run_000 and run_001
    complete, run_002 fails (its data file does not exist). Read it, do not change it.

    Returns ``(experiment_dir, RunSummary)``.
    """
    from torchtune_config_writer.execute.runner import run_experiment

    exp = tmp_path_factory.mktemp("trained") / "exp"
    runs = [{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}, {"dataset.data_files": str(exp / "missing.json")}]
    write_experiment_dir(exp, tiny_assets.base_config, runs, name="trained")
    summary = run_experiment(exp, parallel=2, echo=lambda line: None)
    return exp, summary


@pytest.fixture(scope="session", autouse=True)
def component_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh component cache (compile/sigcache.py) for the session, inherited by subprocesses; never ~/.cache."""
    path = tmp_path_factory.mktemp("component_cache")
    saved = os.environ.get("TORCHTUNE_CONFIG_WRITER_CACHE")
    os.environ["TORCHTUNE_CONFIG_WRITER_CACHE"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("TORCHTUNE_CONFIG_WRITER_CACHE", None)
    else:
        os.environ["TORCHTUNE_CONFIG_WRITER_CACHE"] = saved
