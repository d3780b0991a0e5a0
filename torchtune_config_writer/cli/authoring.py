"""The authoring commands: ``init`` writes a starter experiment.yaml, ``schema`` the JSON Schema of one.

    $ torchtune-config-writer init --template qlora -o qlora_study.yaml
    $ torchtune-config-writer schema -o experiment.schema.json

Neither imports torch or torchtune, so both answer at once. A starter is a
jinja2 template in ``compile/starters/`` filled in with facts of its base
config (its model files, the command that downloads them) and checked against
the schema before it is written. ``init --template tiny`` also builds the
demo's tiny model, which needs torch: a child process builds it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click

from ..errors import BaseConfigNotFoundError, ConfigWriterError, close_matches, did_you_mean

if TYPE_CHECKING:
    from ..compile.registry import BuiltinConfig

STARTERS_DIR = Path(__file__).resolve().parent.parent / "compile" / "starters"
#: The schema's file name next to an experiment file (the starters' modeline points at it).
SCHEMA_FILE = "experiment.schema.json"
#: Identifies a schema this tool wrote (init refreshes such a file, and leaves any other alone).
SCHEMA_ID = "urn:torchtune-config-writer:experiment.schema.json"
#: Where ``init --template tiny`` builds the tiny model, relative to the experiment file.
TINY_ASSETS = "tiny_assets"


@dataclass(frozen=True)
class Starter:
    """One ``init --template``: the kind of study it sets up and the config it starts from."""

    name: str
    default_base: str | None
    """A torchtune config name; None for ``tiny``, whose base is the demo's own file."""
    headline: str
    """What the study compares: the file's first comment."""
    kind: str
    """The configs it fits, in words (for error messages)."""


STARTERS = {s.name: s for s in (
    Starter("lora", "llama3_2/1B_lora_single_device", "A LoRA study: rank x learning rate.", "LoRA"),
    Starter("qlora", "llama3_2/1B_qlora_single_device", "A QLoRA study: LoRA rank x alpha.", "QLoRA"),
    Starter("full", "llama3_2/1B_full_single_device", "A full finetune study: learning rate.", "full finetune"),
    Starter("dpo", "llama3_1/8B_lora_dpo_single_device", "A DPO study: beta, the pull towards the reference model.", "DPO"),
    Starter("tiny", None, "A tiny LoRA study on a CPU: rank x learning rate.", "tiny demo"),
)}


# ----------------------------------------------------------------------------- init


@click.command("init")
@click.option("--template", "-t", "template", type=click.Choice(list(STARTERS)), default="lora", show_default=True,
              help="The kind of study: lora, qlora, full, dpo, or tiny (trains on a CPU in seconds).")
@click.option("--base", metavar="CONFIG", help="The torchtune config to start from (`ls` lists them); default: the template's.")
@click.option("--output", "-o", "output", type=click.Path(path_type=Path), default=Path("experiment.yaml"), show_default=True,
              help="The experiment file to write.")
@click.option("--schema/--no-schema", default=True, show_default=True,
              help=f"Also write {SCHEMA_FILE} next to it, for editor completion and checks.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def init_cmd(template: str, base: str | None, output: Path, schema: bool, force: bool) -> None:
    """Write a commented starter experiment file that validates as written.

    Each template varies a few settings that matter for its kind of study and
    fixes the ones a fair comparison needs; edit it, then `validate` it.
    """
    starter = STARTERS[template]
    _check_target(output, force)
    context = _context(starter, base, output, schema)
    text = render_starter(starter.name, context)
    _check_starter(text, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if starter.name == "tiny":  # before the file, so that it never names a base that is not there
        _build_tiny_assets(output.parent / TINY_ASSETS)
    _atomic_write(output, text)
    click.echo(f"✓ Wrote {output} (template {starter.name}, base {context.get('base') or context['base_file']})")
    if schema:
        click.echo(f"✓ {_write_schema_beside(output.parent / SCHEMA_FILE)}")
    click.echo(f"  Next: edit it, then torchtune-config-writer validate {output}")


def _check_target(output: Path, force: bool) -> None:
    """Refuse a directory, and an existing file unless ``--force``."""
    if output.is_dir():
        raise ConfigWriterError(f"{output} is a directory; name the file to write, e.g. -o {output / 'experiment.yaml'}")
    if output.exists() and not force:
        raise ConfigWriterError(
            f"{output} already exists; init never overwrites a file. Choose another name with -o FILE, "
            "remove the file, or pass --force to replace it"
        )


def _context(starter: Starter, base: str | None, output: Path, schema: bool) -> dict[str, Any]:
    """Everything a starter template is filled in with."""
    context: dict[str, Any] = {
        "template": starter.name,
        "headline": starter.headline,
        "file": output.name,
        "name": experiment_name_for(output, starter.name),
        "schema": f"./{SCHEMA_FILE}" if schema else None,
    }
    if starter.name == "tiny":
        if base:
            raise ConfigWriterError(
                "--base does not apply to --template tiny: it trains the demo's own tiny model. "
                "Leave --base out, or pick another template (lora, qlora, full, dpo) to start from a torchtune config"
            )
        from ..demo.assets import assets_paths

        base_file = assets_paths(output.parent / TINY_ASSETS).base_config
        return context | {"assets": TINY_ASSETS, "base_file": f"{TINY_ASSETS}/{base_file.name}"}
    found = resolve_base(starter, base)
    return context | {"base": found.name, "distributed": _is_distributed(found.recipe)} | base_facts(found.path)


def experiment_name_for(output: Path, template: str) -> str:
    """The file's name as experiment name (``rank_study.yaml`` -> ``rank_study``); ``<template>_study`` for the default one."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", output.stem).strip("._-")[:100]
    return stem if stem and stem != "experiment" else f"{template}_study"


def render_starter(template: str, context: dict[str, Any]) -> str:
    """The starter file's text: ``compile/starters/<template>.yaml.j2`` filled in."""
    import jinja2  # only init renders: keep importing this module light

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(STARTERS_DIR)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    env.filters["yaml_scalar"] = yaml_scalar
    return env.get_template(f"{template}.yaml.j2").render(context)


def yaml_scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when the experiment's loader reads that back as the same string, else quoted.

    >>> yaml_scalar("/tmp/Llama-3.2-1B-Instruct/"), yaml_scalar("/data/my model #2"), yaml_scalar("null")
    ('/tmp/Llama-3.2-1B-Instruct/', '"/data/my model #2"', '"null"')
    """
    from ..compile import yamlio

    try:
        plain = "\n" not in value and yamlio.load(f"k: {value}\n") == {"k": value}
    except Exception:  # any YAML error: not writable plain
        plain = False
    return value if plain else json.dumps(value)  # a YAML double-quoted string takes JSON's escapes


def _check_starter(text: str, output: Path) -> None:
    """The rendered file must pass the schema; a failure is a bug of the template, said as such."""
    from ..compile.schema import load_experiment, parse_yaml, to_plain
    from ..errors import ExperimentSchemaError

    try:
        load_experiment(to_plain(parse_yaml(text, str(output))))
    except ExperimentSchemaError as e:
        raise ConfigWriterError(f"the starter for {output} does not pass the schema (a bug in the template): {e}") from None


# ----------------------------------------------------------------------------- the base config


def config_kind(name: str, recipe: str) -> str | None:
    """The template that fits a shipped config (lora, qlora, full, dpo), or None (evaluation, PPO, QAT, ...).

    >>> config_kind("llama3_2/1B_qlora_single_device", "lora_finetune_single_device")
    'qlora'
    >>> config_kind("llama3_1/8B_lora_dpo", "lora_dpo_distributed")
    'dpo'
    """
    if re.fullmatch(r"(lora|full)_dpo_(single_device|distributed)", recipe):
        return "dpo"
    if re.fullmatch(r"full_finetune_(single_device|distributed)", recipe):
        return "full"
    if re.fullmatch(r"lora_finetune_(single_device|distributed)", recipe):
        # QLoRA and QDoRA configs quantize the base model; their names say so.
        return "qlora" if re.search(r"q(lo|do)ra", name.rsplit("/", 1)[-1]) else "lora"
    return None


def fits(template: str, kind: str | None) -> bool:
    """Whether a config of ``kind`` suits ``template``: its own kind, and QLoRA configs are LoRA configs too."""
    return kind == template or (template == "lora" and kind == "qlora")


def resolve_base(starter: Starter, base: str | None) -> BuiltinConfig:
    """The registry entry of ``--base`` (or the template's default), which must fit the template."""
    from ..compile import registry

    name = (base or starter.default_base).removesuffix(".yaml")
    table = registry.builtin_configs()
    fitting = [n for n, c in table.items() if fits(starter.name, config_kind(n, c.recipe))]
    if name not in table:
        raise BaseConfigNotFoundError(_unknown_base(base or name, starter, table, fitting))
    found = registry.find_config(name)  # also says when this torchtune lacks the file
    kind = config_kind(found.name, found.recipe)
    if not fits(starter.name, kind):
        raise ConfigWriterError(_misfit(found, kind, starter, fitting))
    return found


def _unknown_base(name: str, starter: Starter, table: dict, fitting: list[str]) -> str:
    if Path(name).is_file():
        return (f"--base takes a torchtune config name, not a file; for your own config, write "
                f"base_config_file: {name} and recipe: into the experiment file instead (Appendix F.3)")
    name = name.removesuffix(".yaml")
    hint = did_you_mean(name, fitting, cutoff=0.5) or did_you_mean(name, table, cutoff=0.5)
    return (f"--base '{name}' is not a torchtune config.{hint} "
            f"`torchtune-config-writer ls {starter.name}` lists the {starter.kind} configs")


def _misfit(found: BuiltinConfig, kind: str | None, starter: Starter, fitting: list[str]) -> str:
    """Why a config does not suit the template, and what would."""
    closest = close_matches(found.name, fitting, n=1, cutoff=0.5) or [starter.default_base]
    instead = f"pick a {starter.kind} config such as {closest[0]} (`torchtune-config-writer ls {starter.name}`)"
    if kind:
        return (f"--base {found.name} is a {STARTERS[kind].kind} config, but --template {starter.name} sets up "
                f"a {starter.kind} study. Use --template {kind}, or {instead}")
    return (f"--base {found.name} is run by recipe {found.recipe}, which no template sets up (they set up LoRA, "
            f"QLoRA, full finetune and DPO studies). Either {instead}, or start from the closest template and "
            "set base_config by hand: `validate` then names every setting that does not fit")


def _is_distributed(recipe: str) -> bool:
    from ..compile import registry

    info = registry.recipe_info(recipe)
    return bool(info and info.supports_distributed)


def base_facts(path: Path) -> dict[str, Any]:
    """What a starter repeats from its base: the model files it reads and the command that downloads them."""
    from ..compile import yamlio

    text = path.read_text()
    return {"model_files": list(_model_files(yamlio.load(text))), "download": _download_command(text)}


def _model_files(cfg: Any) -> Iterator[tuple[str, str]]:
    """(dotted key, path) of the tokenizer files and every checkpointer's directory."""
    tokenizer = cfg.get("tokenizer")
    if isinstance(tokenizer, dict):
        for key in ("path", "merges_file"):
            if _is_path(tokenizer.get(key)):
                yield f"tokenizer.{key}", str(tokenizer[key])
    for name, node in cfg.items():
        if isinstance(node, dict) and str(node.get("_component_", "")).endswith("Checkpointer"):
            if _is_path(node.get("checkpoint_dir")):
                yield f"{name}.checkpoint_dir", str(node["checkpoint_dir"])


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "${" not in value


def _download_command(text: str) -> str | None:
    """The ``tune download ...`` line torchtune's configs carry in their header comment."""
    match = re.search(r"^#\s*(tune download .+?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


# ----------------------------------------------------------------------------- tiny


def _build_tiny_assets(dest: Path) -> None:
    """Build the tiny model, tokenizer and data in ``dest`` (reused when built), in a child process.

    Building imports torch; a child keeps ``init`` itself light, and it is the
    same command the starter tells the user to rerun.
    """
    click.echo(f"  Building the tiny model, tokenizer and data in {dest} (a few seconds; reused when built)")
    proc = subprocess.run([sys.executable, "-m", "torchtune_config_writer.demo.assets", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigWriterError(f"building the tiny assets in {dest} failed:\n{(proc.stderr or proc.stdout).strip()}")


# ----------------------------------------------------------------------------- schema


@click.command("schema")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Write it to this file (e.g. {SCHEMA_FILE}) instead of printing it.")
def schema_cmd(output: Path | None) -> None:
    """Print the JSON Schema of experiment.yaml, for editor completion and checks (README.md, "Editor support")."""
    text = schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(output, text)
    click.echo(f"✓ Wrote {output}", err=True)


def experiment_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file, generated from the pydantic models in ``compile/schema.py``.

    The models describe the parsed experiment; the file allows a little more,
    which is added here (nested variables, empty sections, a name from an
    included file, expressions in ``slurm:``). Fields the loader fills in
    itself (where the file is, its includes merged) are not the user's to write.
    """
    from .. import __version__
    from ..compile.schema import Experiment

    schema = Experiment.model_json_schema()
    internal = [n for n, f in Experiment.model_fields.items() if f.exclude]
    properties = schema["properties"]
    for name in internal:
        properties.pop(name, None)
    schema["required"] = [n for n in schema.get("required", []) if n not in internal]
    _allow_file_forms(schema)
    if not schema["required"]:
        del schema["required"]
    header = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "torchtune_config_writer experiment",
        "description": "An experiment file: a torchtune base config, what the runs vary (variables) and what "
                       "they share (controls). `torchtune-config-writer validate FILE` checks the rest.",
        "$comment": f"Generated by `torchtune-config-writer schema` {__version__}; regenerate it after upgrading.",
    }
    return header | {k: v for k, v in schema.items() if k not in ("title", "description")}


def _allow_file_forms(schema: dict[str, Any]) -> None:
    """What the file may say beyond the model: nested variables, empty sections, fragments, expressions."""
    from ..compile.schema import NAME_PATTERN, Experiment

    properties = schema["properties"]
    if "experiment_name" in properties:
        properties["experiment_name"]["pattern"] = NAME_PATTERN.pattern
    if "variables" in properties:
        # model: {lora_rank: [8, 16]} is model.lora_rank: [8, 16]; every list needs a value.
        schema.setdefault("$defs", {})["VariableTree"] = {
            "type": "object",
            "description": "Variables nested by key: a mapping walks down the config, a list is the values.",
            "additionalProperties": {"anyOf": [{"type": "array", "minItems": 1}, {"$ref": "#/$defs/VariableTree"}]},
        }
        variables = {k: v for k, v in properties["variables"].items() if k not in ("type", "additionalProperties")}
        properties["variables"] = _nullable(variables | {"$ref": "#/$defs/VariableTree"})
    for section in ("controls", "derived"):
        if section in properties:
            properties[section] = _nullable(properties[section])
    if "include" in properties and "experiment_name" in schema.get("required", []):
        # An included file may name the experiment; the merged result is what must have a name.
        schema["required"].remove("experiment_name")
        schema["anyOf"] = [{"required": ["experiment_name"]}, {"required": ["include"]}]
    if "slurm_expressions" in Experiment.model_fields:
        _allow_slurm_expressions(schema)


def _allow_slurm_expressions(schema: dict[str, Any]) -> None:
    """A ``slurm:`` value may be a ``{{ ... }}`` expression, evaluated per run."""
    ref = schema["properties"].get("slurm", {}).get("$ref", "")
    slurm = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1])
    if not slurm:
        return
    expression = {"type": "string", "pattern": r"\{[{%]", "description": "An expression evaluated for each run."}
    for name, prop in slurm["properties"].items():
        slurm["properties"][name] = _either(prop, expression)


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """``prop``, or null (an empty ``controls:`` line)."""
    return _either(prop, {"type": "null"})


def _either(prop: dict[str, Any], alternative: dict[str, Any]) -> dict[str, Any]:
    """``prop`` or ``alternative``; prop's title, description and default stay outside, where editors show them."""
    notes = {k: prop[k] for k in ("title", "description", "default") if k in prop}
    return notes | {"anyOf": [{k: v for k, v in prop.items() if k not in notes}, alternative]}


def schema_text() -> str:
    return json.dumps(experiment_schema(), indent=2) + "\n"


def _write_schema_beside(path: Path) -> str:
    """Write or refresh the schema file init's modeline points at; never replace a file this tool did not write."""
    text = schema_text()
    if path.exists():
        if path.read_text() == text:
            return f"{path} is up to date"
        if not _is_our_schema(path):
            return f"left {path} alone: it is not a schema this tool wrote (the modeline still points at it)"
    _atomic_write(path, text)
    return f"Wrote {path} (editor completion and checks; see README.md, \"Editor support\")"


def _is_our_schema(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("$id") == SCHEMA_ID
    except (OSError, ValueError, AttributeError):
        return False


def _atomic_write(path: Path, text: str) -> None:
    from ..atomic import atomic_write_text

    atomic_write_text(path, text)


COMMANDS = (init_cmd, schema_cmd)
