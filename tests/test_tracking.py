"""execute/tracking.py against a real MLflow (an sqlite store, and a local ``mlflow server``) and W&B offline.

The trainings are real ``tune run lora_finetune_single_device`` runs of the tiny model,
with torchtune's own MLFlowLogger / WandBLogger as their metric_logger and the
environment ``start_run`` returns; what they logged is read back through
``MlflowClient`` and ``wandb leet inspect --json`` (W&B's reader of its offline files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import write_experiment_dir
from mlflow_server import MlflowServer, free_port, mlflow_server
from ruamel.yaml import YAML

from torchtune_config_writer import expdir
from torchtune_config_writer.execute import tracking
from torchtune_config_writer.expdir import (EvalResult, Evaluator, RunEntry, RunMapping, State, StatusRecord,
                                            TrackingPlan)

MLFLOW_LOGGER = "torchtune.training.metric_logging.MLFlowLogger"
WANDB_LOGGER = "torchtune.training.metric_logging.WandBLogger"
STEPS = 3


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def tracking_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No telemetry, and W&B's own settings and caches in a temp folder (never the home directory)."""
    root = tmp_path_factory.mktemp("wandb_home")
    values = {"MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_CONFIG_DIR": str(root / "config"),
              "WANDB_CACHE_DIR": str(root / "cache"), "WANDB_DATA_DIR": str(root / "data")}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 for this module, stopped at its end."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as started:
        yield started


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# ----------------------------------------------------------------------------- helpers


def _mapping(plan: TrackingPlan | None, *runs: RunEntry) -> RunMapping:
    """A run table without configs: enough for what start_run reads."""
    return RunMapping("exp", "lora_finetune_single_device", False, None, "/base.yaml", "2026-01-01T00:00:00", "test",
                      ("optimizer.lr",), expdir.Validation.PASSED, expdir.SlurmPlan(), runs, tracking=plan)


def _run(run_id: str = "run_000", lr: float = 1e-3, **kwargs: Any) -> RunEntry:
    return RunEntry(run_id, int(run_id[-3:]), expdir.config_file(run_id), "0" * 64, f"/tmp/out/{run_id}",
                    {"optimizer.lr": lr}, expdir.Validation.PASSED, None, **kwargs)


def _logger(plan: TrackingPlan, run: RunEntry) -> dict[str, Any]:
    """The metric_logger the compile side writes for ``plan`` (tracking.py's docstring names the keys)."""
    if plan.backend == "mlflow":
        return {"_component_": MLFLOW_LOGGER, "experiment_name": plan.experiment,
                "tracking_uri": plan.tracking_uri, "run_name": run.tracking_name}
    return {"_component_": WANDB_LOGGER, "project": plan.project, "group": plan.experiment,
            "name": run.tracking_name, "mode": plan.mode, "dir": plan.dir}


def tracked_experiment(exp: Path, base_config: Path, plan: TrackingPlan, runs: list[dict[str, Any]],
                       names: list[str]) -> RunMapping:
    """An experiment directory whose runs log through torchtune's logger for ``plan`` (STEPS steps each)."""
    write_experiment_dir(exp, base_config, runs, name="tracked", names=names)
    mapping = expdir.load_mapping(exp)
    yaml = YAML(typ="rt")
    entries = []
    for run, name in zip(mapping.runs, names):
        run = dataclasses.replace(run, tracking_name=name)
        path = exp / run.config
        cfg = yaml.load(path.read_text())
        cfg["metric_logger"] = _logger(plan, run)
        cfg["max_steps_per_epoch"] = STEPS
        with open(path, "w") as f:
            yaml.dump(cfg, f)
        entries.append(dataclasses.replace(run, config_sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    mapping = dataclasses.replace(mapping, runs=tuple(entries), tracking=plan)
    expdir.write_mapping(exp, mapping)
    return mapping


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def train(exp: Path, mapping: RunMapping, run: RunEntry, tracked: tracking.TrackedRun) -> StatusRecord:
    """``tune run`` the run as the runner does (cwd = the experiment directory), with ``tracked.env``."""
    started = _now()
    proc = subprocess.run([str(Path(sys.executable).parent / "tune"), "run", mapping.recipe, "--config", run.config],
                          cwd=exp, env={**os.environ, **tracked.env}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    (exp / f"{run.run_id}.log").write_text(proc.stdout + proc.stderr)  # for a failing test's reader
    state = State.COMPLETED if proc.returncode == 0 else State.FAILED
    return StatusRecord(run.run_id, state, exit_code=proc.returncode, started=started, ended=_now(),
                        tracking_run_id=tracked.run_id)


def start_train_end(exp: Path, mapping: RunMapping, run: RunEntry) -> StatusRecord:
    tracked = tracking.start_run(mapping, run)
    assert tracked is not None
    record = train(exp, mapping, run, tracked)
    assert tracking.end_run(mapping, run, record) is None
    return record


RESULTS = [EvalResult(Evaluator.LM_EVAL, 0, {"count_mc/acc": 0.75, "count_mc/acc_norm": 0.5}, seconds=1.5),
           EvalResult(Evaluator.HELDOUT, 0, {"heldout_loss": 5.25})]


# ----------------------------------------------------------------------------- no tracking, fast checks


def test_untracked_experiment_needs_nothing() -> None:
    mapping = _mapping(None, _run())
    record = StatusRecord("run_000", State.COMPLETED, exit_code=0)
    assert tracking.start_run(mapping, mapping.runs[0]) is None
    assert tracking.end_run(mapping, mapping.runs[0], record) is None
    assert tracking.log_evaluation(mapping, mapping.runs[0], record, RESULTS) is None


def test_check_reachable_names_the_uri_and_the_fix_when_nothing_listens() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(tracking.TrackingError) as e:
        tracking.check_reachable(TrackingPlan("mlflow", "exp", tracking_uri=uri))
    message = str(e.value)
    assert f"nothing answers at {uri}" in message
    assert "mlflow server" in message and "tracking.tracking_uri" in message


def test_start_run_refuses_clearly_when_the_server_is_down() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    mapping = _mapping(TrackingPlan("mlflow", "exp", tracking_uri=uri), _run())
    with pytest.raises(tracking.TrackingError, match=f"nothing answers at {uri}"):
        tracking.start_run(mapping, mapping.runs[0])


def test_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python itself marks a module as not importable
    monkeypatch.setitem(sys.modules, "wandb", None)
    plan = TrackingPlan("wandb", "exp", project="p", mode="offline")
    with pytest.raises(tracking.TrackingError) as e:
        tracking.check_reachable(plan)
    assert "wandb package is not installed" in str(e.value)
    assert "pip install 'torchtune_config_writer[tracking]'" in str(e.value)
    with pytest.raises(tracking.TrackingError, match="not installed"):
        tracking.start_run(_mapping(plan, _run()), _run())


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(tracking.TrackingError, match="'neptune' is not supported: use mlflow or wandb"):
        tracking.check_reachable(TrackingPlan("neptune", "exp"))


def test_end_run_and_log_evaluation_warn_instead_of_raising(server: MlflowServer) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # the server went away after the run started
    mapping = _mapping(TrackingPlan("mlflow", "exp", tracking_uri=uri), _run())
    record = StatusRecord("run_000", State.COMPLETED, exit_code=0, started=_now(), ended=_now(),
                          tracking_run_id="0123abcd")
    warning = tracking.end_run(mapping, mapping.runs[0], record)
    assert warning is not None and warning.startswith("run_000: its end")
    assert uri in warning and "0123abcd" in warning and "recorded in status/" in warning
    warning = tracking.log_evaluation(mapping, mapping.runs[0], record, RESULTS)
    assert warning is not None and "evaluation metrics" in warning and uri in warning
    # a run id the (live) server does not know is a warning too, not an exception
    mapping = _mapping(TrackingPlan("mlflow", "exp", tracking_uri=server.uri), _run())
    assert "0123abcd" in tracking.end_run(mapping, mapping.runs[0], record)
    no_id = dataclasses.replace(record, tracking_run_id=None)
    assert "no tracking run id" in tracking.end_run(mapping, mapping.runs[0], no_id)


def test_check_reachable_sqlite_creates_its_folder_and_the_server_answers(tmp_path: Path,
                                                                         server: MlflowServer) -> None:
    db = tmp_path / "not" / "yet" / "mlflow.db"
    tracking.check_reachable(TrackingPlan("mlflow", "exp", tracking_uri=f"sqlite:///{db}"))
    assert db.is_file()
    tracking.check_reachable(TrackingPlan("mlflow", "exp", tracking_uri=server.uri))


def test_start_run_creates_one_named_run_with_its_values(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = TrackingPlan("mlflow", "sweep-exp", tracking_uri=uri, tags={"team": "nlp", "status": "ignored"})
    run = _run("run_001", 3e-3, derived={"model.lora_alpha": 16}, seed=2, configuration=1,
               tracking_name="lr0.003-s2")
    run = dataclasses.replace(run, parameters={**run.parameters, "seed": 2})
    tracked = tracking.start_run(_mapping(plan, run), run)

    assert tracked.env == {"MLFLOW_RUN_ID": tracked.run_id, "MLFLOW_TRACKING_URI": uri,
                           "MLFLOW_EXPERIMENT_NAME": "sweep-exp", "MLFLOW_DISABLE_TELEMETRY": "true"}
    client = _client(uri)
    experiment = client.get_experiment_by_name("sweep-exp")
    # artifacts beside the database, not in ./mlruns of wherever the runner started
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    got = client.get_run(tracked.run_id)
    assert got.info.experiment_id == experiment.experiment_id
    assert got.info.run_name == "lr0.003-s2" and got.info.status == "RUNNING"
    assert got.data.params == {"sweep/optimizer.lr": "0.003", "sweep/seed": "2", "derived/model.lora_alpha": "16"}
    tags = {k: v for k, v in got.data.tags.items() if not k.startswith("mlflow.")}
    assert tags == {"team": "nlp", "optimizer.lr": "0.003", "seed": "2", "model.lora_alpha": "16",
                    "tcw.run_id": "run_001", "tcw.experiment": "exp", "tcw.configuration": "1", "status": "running"}
    # a second run of the same experiment reuses it
    again = tracking.start_run(_mapping(plan, run), run)
    assert client.get_run(again.run_id).info.experiment_id == experiment.experiment_id != "0"


def test_deleted_experiment_is_explained(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    client.delete_experiment(client.create_experiment("gone"))
    mapping = _mapping(TrackingPlan("mlflow", "gone", tracking_uri=uri), _run())
    with pytest.raises(tracking.TrackingError, match="'gone' .* is deleted: restore it"):
        tracking.start_run(mapping, mapping.runs[0])


def test_wandb_online_without_an_api_key_is_refused(tmp_path: Path) -> None:
    # A fresh interpreter: wandb keeps login state per process; no key anywhere (env, netrc, settings)
    (tmp_path / "netrc").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"), WANDB_CONFIG_DIR=str(tmp_path / "wandb"))
    code = textwrap.dedent("""
        from torchtune_config_writer.execute.tracking import check_reachable, TrackingError
        from torchtune_config_writer.expdir import TrackingPlan
        try:
            check_reachable(TrackingPlan("wandb", "exp", project="p", mode="online"))
        except TrackingError as e:
            print("ERROR", e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert "ERROR no W&B API key is configured: run `wandb login`" in proc.stdout, proc.stdout + proc.stderr
    assert "tracking.mode: offline" in proc.stdout


def test_wandb_start_run_passes_id_and_tags_through_the_environment(tmp_path: Path) -> None:
    plan = TrackingPlan("wandb", "grp", project="proj", mode="offline", dir=str(tmp_path / "wb"),
                        tags={"team": "nlp"})
    run = _run(tracking_name="lr0.001", derived={"data": "a,b"})
    tracked = tracking.start_run(_mapping(plan, run), run)
    again = tracking.start_run(_mapping(plan, run), run)
    assert tracked.run_id.startswith("run_000-") and again.run_id != tracked.run_id  # a rerun is a new run
    assert tracked.env["WANDB_RUN_ID"] == tracked.run_id and tracked.env["WANDB_RESUME"] == "allow"
    assert tracked.env["WANDB_TAGS"].split(",") == [
        "team=nlp", "optimizer.lr=0.001", "data=a;b", "tcw.run_id=run_000", "tcw.experiment=exp",
        "tcw.configuration=0", "status=running"]
    assert {k: tracked.env[k] for k in ("WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_NAME", "WANDB_MODE",
                                        "WANDB_DIR")} == {
        "WANDB_PROJECT": "proj", "WANDB_RUN_GROUP": "grp", "WANDB_NAME": "lr0.001", "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb")}
    assert (tmp_path / "wb").is_dir()


def test_long_and_odd_values_stay_within_the_backends_limits() -> None:
    run = _run(derived={"dataset.files": "x" * 7000, "weird key(1)": 1})
    params = tracking.run_params(run)
    assert len(params["derived/dataset.files"]) == 6000 and params["derived/dataset.files"].endswith("…")
    assert params["derived/weird key_1_"] == "1"
    tags = tracking.wandb_tags({"dataset.files": "x" * 100})
    assert len(tags[0]) == 64


# ----------------------------------------------------------------------------- real trainings


def _finished_runs(client: Any, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment} was not created"
    return client.search_runs([found.experiment_id])


def _check_trained(client: Any, run_id: str, *, name: str, lr: str) -> Any:
    got = client.get_run(run_id)
    assert got.info.run_name == name
    assert got.data.params["sweep/optimizer.lr"] == lr
    assert got.data.params["optimizer.lr"] == lr  # torchtune's own config params, logged beside ours
    assert got.data.tags["optimizer.lr"] == lr and got.data.tags["tcw.experiment"] == "tracked"
    assert got.data.metrics["wall_time_s"] > 0
    return got


@pytest.mark.slow
def test_trainings_logged_to_a_server(tmp_path: Path, tiny_assets, server: MlflowServer) -> None:
    """One completed and one failing training against ``mlflow server``: one run each, complete records."""
    plan = TrackingPlan("mlflow", "server-exp", tracking_uri=server.uri, tags={"team": "nlp"})
    exp = tmp_path / "exp"
    mapping = tracked_experiment(exp, tiny_assets.base_config, plan,
                                 [{"optimizer.lr": 1e-3}, {"dataset.data_files": str(exp / "missing.json")}],
                                 names=["lr0.001", "no-data"])
    tracking.check_reachable(plan)
    good, bad = (start_train_end(exp, mapping, run) for run in mapping.runs)
    assert good.state == State.COMPLETED, (exp / "run_000.log").read_text()[-3000:]
    assert bad.state == State.FAILED
    assert tracking.log_evaluation(mapping, mapping.runs[0], good, RESULTS) is None

    client = _client(server.uri)
    assert sorted(r.info.run_id for r in _finished_runs(client, "server-exp")) == sorted(
        [good.tracking_run_id, bad.tracking_run_id])  # one run per training, not two
    got = _check_trained(client, good.tracking_run_id, name="lr0.001", lr="0.001")
    assert got.info.status == "FINISHED" and got.data.tags["status"] == "completed"
    assert got.data.tags["team"] == "nlp" and got.data.tags["tcw.exit_code"] == "0"
    loss = client.get_metric_history(good.tracking_run_id, "loss")
    assert [m.step for m in loss] == list(range(1, STEPS + 1))
    assert got.data.metrics["eval/count_mc/acc"] == 0.75 and got.data.metrics["eval/heldout_loss"] == 5.25
    assert got.data.metrics["eval/lm_eval_seconds"] == 1.5
    assert [m.step for m in client.get_metric_history(good.tracking_run_id, "eval/count_mc/acc")] == [0]
    # torchtune's config artifact went through the server into its artifact store
    assert list(server.artifacts.rglob("torchtune_config.yaml"))

    failed = client.get_run(bad.tracking_run_id)
    assert failed.info.run_name == "no-data" and failed.info.status == "FAILED"
    assert failed.data.tags["status"] == "failed" and failed.data.tags["tcw.exit_code"] != "0"
    assert failed.data.params["sweep/dataset.data_files"] == str(exp / "missing.json")


@pytest.mark.slow
def test_training_logged_to_an_sqlite_store(tmp_path: Path, tiny_assets) -> None:
    """The same through ``sqlite:////abs/mlflow.db``: artifacts beside the database, none in the experiment."""
    store = tmp_path / "tracking"
    plan = TrackingPlan("mlflow", "sqlite-exp", tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    exp = tmp_path / "exp"
    mapping = tracked_experiment(exp, tiny_assets.base_config, plan, [{"optimizer.lr": 2e-3}], names=["lr0.002"])
    tracking.check_reachable(plan)
    record = start_train_end(exp, mapping, mapping.runs[0])
    assert record.state == State.COMPLETED, (exp / "run_000.log").read_text()[-3000:]
    assert tracking.log_evaluation(mapping, mapping.runs[0], record, RESULTS[:1]) is None

    client = _client(plan.tracking_uri)
    assert [r.info.run_id for r in _finished_runs(client, "sqlite-exp")] == [record.tracking_run_id]
    got = _check_trained(client, record.tracking_run_id, name="lr0.002", lr="0.002")
    assert got.info.status == "FINISHED"
    assert len(client.get_metric_history(record.tracking_run_id, "loss")) == STEPS
    assert got.data.metrics["eval/count_mc/acc_norm"] == 0.5
    assert list((store / "mlartifacts").rglob("torchtune_config.yaml"))
    assert not (exp / "mlruns").exists()


def wandb_records(segment: Path) -> list[dict[str, Any]]:
    """The records of one offline run folder, as ``wandb leet inspect --json`` prints them."""
    proc = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(segment)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r[kind] for r in records if r.get("type") == kind]


def _merged(records: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for record in _of(records, kind):
        out.update(record.get("update", {}))
    return out


@pytest.mark.slow
def test_wandb_offline_training_and_additions_share_one_run_id(tmp_path: Path, tiny_assets) -> None:
    """W&B offline: the training's folder and each of the tool's additions are folders of the same run id."""
    plan = TrackingPlan("wandb", "wb-exp", project="tcw-test", mode="offline", dir=str(tmp_path / "wandb_dir"),
                        tags={"team": "nlp"})
    exp = tmp_path / "exp"
    mapping = tracked_experiment(exp, tiny_assets.base_config, plan, [{"optimizer.lr": 1e-3}], names=["lr0.001"])
    tracking.check_reachable(plan)
    record = start_train_end(exp, mapping, mapping.runs[0])
    assert record.state == State.COMPLETED, (exp / "run_000.log").read_text()[-3000:]
    assert tracking.log_evaluation(mapping, mapping.runs[0], record, RESULTS) is None

    rid = record.tracking_run_id
    segments = sorted((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
    assert [s.name.split("-", 3)[-1] for s in segments] == [rid] * 3  # training, end_run, log_evaluation
    assert all((s / f"run-{rid}.wandb").is_file() for s in segments)
    child, end, evaluation = (wandb_records(s) for s in segments)

    started = _of(child, "run")[0]
    assert started["run_id"] == rid and started["display_name"] == "lr0.001"
    assert started["project"] == "tcw-test" and started["run_group"] == "wb-exp"
    assert {"team=nlp", "optimizer.lr=0.001", "tcw.run_id=run_000", "status=running"} <= set(started["tags"])
    assert [h["item"]["global_step"] for h in _of(child, "history") if "loss" in h["item"]] == list(
        range(1, STEPS + 1))

    assert "status=completed" in _of(end, "run")[-1]["tags"]
    summary = _merged(end, "summary")
    assert summary["wall_time_s"] > 0 and summary["status"] == "completed"
    assert any(c["update"].get("sweep/optimizer.lr") == 0.001 for c in _of(end, "config"))
    assert _of(end, "exit")[-1].get("exit_code", 0) == 0

    rows = [h["item"] for h in _of(evaluation, "history")]
    assert len(rows) == len(RESULTS)  # one row per result
    logged = {k: v for row in rows for k, v in row.items() if k.startswith("eval/")}
    assert logged == {"eval/count_mc/acc": 0.75, "eval/count_mc/acc_norm": 0.5, "eval/lm_eval_seconds": 1.5,
                      "eval/heldout_loss": 5.25}
    assert all(row["epoch"] == 0 for row in rows)
