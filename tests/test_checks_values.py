"""Value checks: types against the callee's annotations (value_types) and ranges (ranges), on real shipped configs.

Each rule gets a failing and a passing case: a shipped config with one value
changed, through ``validate.check_config`` with torchtune's real components.
Property tests compare the checks with an oracle written here, independently.
"""

from __future__ import annotations

import copy
import enum
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from omegaconf import OmegaConf

from torchtune_config_writer import generate_configs
from torchtune_config_writer.compile import registry
from torchtune_config_writer.compile.checks import Finding
from torchtune_config_writer.compile.checks.ranges import check_ranges
from torchtune_config_writer.compile.checks.value_types import check_types, describe, fits, param_types
from torchtune_config_writer.compile.validate import check_config

LORA = "llama3_2/1B_lora_single_device"  # lora_finetune_single_device
FULL = "llama3_2/1B_full"  # full_finetune_distributed, torch.optim.AdamW
GENERATE = "generation"  # generate: accepts fp16


def shipped(name: str) -> tuple[dict, str]:
    """A shipped config as the plain dict torchtune reads, and its recipe."""
    found = registry.builtin_configs()[name]
    return OmegaConf.to_container(OmegaConf.load(found.path)), found.recipe


_BASES = {name: shipped(name) for name in (LORA, FULL, GENERATE)}


def changed(name: str, key: str, value: Any) -> tuple[dict, str]:
    """The shipped config ``name`` with the dotted ``key`` set to ``value``."""
    cfg, recipe = _BASES[name]
    cfg = copy.deepcopy(cfg)
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value
    return cfg, recipe


def at(key: str, name: str, value: Any, recipe: str | None = None) -> list[Finding]:
    """Every finding at ``key`` once ``key`` is set to ``value`` in shipped config ``name``."""
    cfg, own = changed(name, key, value)
    return [f for f in check_config(cfg, own if recipe is None else recipe) if f.key == key]


def one_error(key: str, name: str, value: Any) -> str:
    """The one error at ``key`` (a key is never reported twice); its message."""
    found = at(key, name, value)
    assert len(found) == 1 and not found[0].warning, found
    return found[0].message


# ----------------------------------------------------------------------------- types: failing and passing


@pytest.mark.parametrize(
    "name, key, bad, fragments, good",
    [
        (LORA, "model.lora_rank", "eight", ["must be an integer", "'eight' (a string)", "lora_rank: 8"], 16),
        (LORA, "model.lora_rank", [8], ["must be an integer", "One value goes here", "write lora_rank: 8", "variables:"], 8),
        (LORA, "model.lora_rank", True, ["must be an integer", "true (a bool)"], 4),
        (LORA, "model.lora_rank", 8.0, ["must be an integer", "lora_rank: 8"], 8),
        (LORA, "batch_size", 2.5, ["must be an integer >= 1, got 2.5", "batch_size: 2 or 3"], 3),
        (LORA, "compile", "max-autotune", ["must be true or false", "'max-autotune'", "compile key is a bool",
                                           "compile: true"], True),
        (LORA, "compile", "yes", ["must be true or false", "compile: true or compile: false"], False),
        (LORA, "lr_scheduler.num_warmup_steps", 0.03, ["must be an integer, got 0.03", "counts steps",
                                                       "not a fraction", "derived:", "num_warmup_steps: 100"], 30),
        (LORA, "model.lora_alpha", "2*${model.lora_rank}", ["must be a number", "'2*64'", "derived:",
                                                            '"{{ 2 * lora_rank }}"'], "${model.lora_rank}"),
        (LORA, "model.lora_attn_modules", ["q_proj", "o_proj"], ["item 1", "'output_proj'", "got 'o_proj'",
                                                                 "Did you mean 'output_proj'?", "silently"],
         ["q_proj", "output_proj"]),
        (LORA, "model.lora_attn_modules", ["gate_proj"], ["apply_lora_to_mlp: true"], ["v_proj"]),
        (LORA, "model.lora_attn_modules", "q_proj", ["must be a list"], ["q_proj"]),
        (LORA, "model.apply_lora_to_mlp", "false", ["must be true or false", "without quotes"], False),
        (LORA, "model.lora_dropout", "0.1", ["must be a number", "without quotes", "lora_dropout: 0.1"], 0.1),
        (LORA, "enable_activation_checkpointing", 1, ["must be true or false"], True),
        (LORA, "clip_grad_norm", "big", ["must be a number or null", "clip_grad_norm: 1.0"], "inf"),
        (LORA, "tokenizer.max_seq_len", "2048", ["must be an integer or null", "max_seq_len: 2048"], 2048),
        (FULL, "optimizer.betas", [0.9], ["must be a list of 2 items"], [0.9, 0.95]),
        (FULL, "optimizer.betas", [0.9, "x"], ["item 1 must be a number, got 'x'"], (0.9, 0.999)),
        (FULL, "optimizer.fused", "True", ["must be true or false or null", "without quotes"], None),
        (LORA, "checkpointer.checkpoint_files", "model.safetensors",
         ["a list whose items are each a string or a mapping"], {"filename_format": "m-{}-of-{}.safetensors",
                                                                 "max_filename": "00001"}),
    ],
)
def test_type_rule_refuses_the_bad_value_and_accepts_the_good(name, key, bad, fragments, good):
    message = one_error(key, name, bad)
    for fragment in fragments:
        assert fragment in message, message
    assert at(key, name, good) == []


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.lora_alpha", 16),        # an int where a float goes: Python takes it
        ("model.lora_dropout", 0),
        ("tokenizer.max_seq_len", None),  # Optional[int]
        ("clip_grad_norm", None),
        ("clip_grad_norm", 1),
        ("model.lora_rank", "${batch_size}"),  # an interpolation that resolves to an int
        ("dataset.train_on_input", False),
        ("dataset.split", "train[:10%]"),
    ],
)
def test_values_torchtune_takes_are_not_refused(key, value):
    assert at(key, LORA, value) == []


def test_an_unresolvable_interpolation_is_left_to_the_interpolation_check():
    found = at("model.lora_rank", LORA, "${model.no_such_key}")
    assert len(found) == 1 and "points to a key the config does not have" in found[0].message


def test_compile_mode_strings_are_named_as_modes():
    message = one_error("compile", LORA, "reduce-overhead")
    assert "a mode such as 'reduce-overhead' cannot be chosen from the config" in message


def test_top_level_keys_count_only_for_recipes_that_read_them():
    # generate.py reads no `compile` key: a string there changes nothing torchtune does
    assert at("compile", GENERATE, "max-autotune") == []
    assert at("compile", LORA, "max-autotune") != []


def test_a_recipe_given_as_a_file_reads_what_its_source_reads(tmp_path):
    recipe = tmp_path / "my_recipe.py"
    recipe.write_text("def recipe_main(cfg):\n    return cfg.batch_size\n")
    assert at("compile", LORA, "max-autotune", recipe=str(recipe)) == []
    assert at("enable_activation_checkpointing", LORA, "no", recipe=str(recipe)) == []
    assert len(at("batch_size", LORA, 2.5, recipe=str(recipe))) == 1  # ranges: every recipe has a batch


# ----------------------------------------------------------------------------- annotations → descriptions


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def future_annotated(a: int, b: Optional[List[Literal["x", "y"]]] = None, c: Color = Color.RED,
                     d: Path = Path("."), e: "Undefined" = 1, **rest: Any) -> None:  # noqa: F821 - unresolvable on purpose
    """A callee written with ``from __future__ import annotations``: every annotation is a string."""


@pytest.mark.parametrize(
    "annotation, desc",
    [
        (int, "int"), (float, "float"), (bool, "bool"), (str, "str"), (None, "none"), (Any, "any"),
        (Optional[int], {"union": ["int", "none"]}),
        (Union[int, str], {"union": ["int", "str"]}),
        (int | None, {"union": ["int", "none"]}),
        (List[int], {"list": "int"}), (Sequence[str], {"list": "str"}), (list, {"list": "any"}),
        (Tuple[float, float], {"tuple": ["float", "float"]}), (Tuple[int, ...], {"list": "int"}),
        (Dict[str, int], {"dict": "int"}), (dict, {"dict": "any"}),
        (Literal["a", 1], {"literal": ["a", 1]}),
        (Color, {"enum": "Color", "values": ["red", "blue"], "names": ["RED", "BLUE"]}),
        (Path, "str"),
        (Union[int, Any], "any"),
    ],
)
def test_annotations_reduce_to_json_descriptions(annotation, desc):
    assert describe(annotation) == desc
    assert json.loads(json.dumps(desc)) == desc


def test_string_annotations_are_resolved_and_unresolvable_ones_take_anything():
    types = param_types(f"{__name__}.future_annotated")
    assert types == {
        "a": "int",
        "b": {"union": [{"list": {"literal": ["x", "y"]}}, "none"]},
        "c": {"enum": "Color", "values": ["red", "blue"], "names": ["RED", "BLUE"]},
        "d": "str",
        "e": "any",
    }
    assert fits("blue", types["c"]) and fits("BLUE", types["c"]) and not fits("green", types["c"])


def test_torch_annotations_a_yaml_scalar_cannot_be_are_objects():
    lr = param_types("torch.optim.AdamW")["lr"]  # float | Tensor
    assert fits(1e-4, lr) and not fits("fast", lr)


# ----------------------------------------------------------------------------- ranges: failing and passing


@pytest.mark.parametrize(
    "name, key, bad, fragments, good",
    [
        (FULL, "optimizer.lr", 0, ["must be a positive number, got 0", "2e-5"], 2e-5),
        (FULL, "optimizer.lr", -1e-4, ["must be a positive number"], 1e-4),
        (FULL, "optimizer.lr", "fast", ["must be a positive number, got 'fast' (a string)", "lr: 2e-5"], 1e-3),
        (FULL, "optimizer.lr", "2e-5", ["without quotes", "lr: 2e-5"], 2e-5),
        (LORA, "model.lora_dropout", 1.0, ["must be a number in [0, 1), got 1.0"], 0.99),
        (LORA, "model.lora_dropout", -0.1, ["must be a number in [0, 1)"], 0.0),
        (LORA, "epochs", 0, ["must be an integer >= 1, got 0"], 1),
        (LORA, "batch_size", -2, ["must be an integer >= 1"], 1),
        (LORA, "gradient_accumulation_steps", 0, ["must be an integer >= 1"], 16),
        (LORA, "max_steps_per_epoch", 0, ["must be an integer >= 1 or null"], None),
        (LORA, "max_steps_per_epoch", 10.5, ["must be an integer >= 1 or null, got 10.5"], 10),
        (LORA, "model.lora_rank", 0, ["must be an integer >= 1, got 0"], 1),
        (LORA, "model.lora_alpha", 0, ["must be a number > 0"], 0.5),
        (LORA, "model.lora_alpha", -16, ["must be a number > 0"], 16),
        (LORA, "seed", -1, ["from 0 to 4294967295 or null"], 0),
        (LORA, "seed", "1234", ["without quotes", "seed: 1234"], 1234),
        (LORA, "dtype", "bf17", ["must be one of bf16, fp32", "Did you mean 'bf16'?"], "fp32"),
        (LORA, "device", "gpu", ["must be a device such as cpu"], "cuda:1"),
        (LORA, "cudnn_deterministic_mode", "warnn", ["Did you mean 'warn'?"], "warn"),
    ],
)
def test_range_rule_refuses_the_bad_value_and_accepts_the_good(name, key, bad, fragments, good):
    message = one_error(key, name, bad)
    for fragment in fragments:
        assert fragment in message, message
    assert at(key, name, good) == []


def test_dtype_names_never_offer_fp16_to_a_recipe_that_refuses_it():
    assert "fp16" not in one_error("dtype", LORA, "bf17")


def test_fp16_is_refused_once_where_the_recipe_refuses_it_and_taken_where_it_does_not():
    message = one_error("dtype", LORA, "fp16")  # recipe_rules cites the recipe's line; said once
    assert "bf16" in message
    assert at("dtype", GENERATE, "fp16") == []  # generate.py runs in fp16
    unknown = at("dtype", LORA, "fp16", recipe="")
    assert [f.warning for f in unknown] == [True] and "bf16" in unknown[0].message


def test_an_implausible_adam_lr_is_a_warning_not_an_error():
    found = at("optimizer.lr", FULL, 2.0)
    assert [f.warning for f in found] == [True]
    assert "implausibly large for AdamW" in found[0].message
    cfg, recipe = changed(FULL, "optimizer", {"_component_": "torch.optim.SGD", "lr": 2.0})
    assert [f for f in check_config(cfg, recipe) if f.key == "optimizer.lr"] == []  # SGD lrs can be large


# ----------------------------------------------------------------------------- properties against an oracle

VALUES = st.one_of(
    st.integers(-3, 2**33),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5).filter(lambda s: "${" not in s and s != "???"),
    st.lists(st.integers(0, 9), max_size=2),
)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


#: What each key accepts, written from torchtune's code independently of the checks.
ORACLE = {
    (LORA, "model.lora_rank"): lambda v: _is_int(v) and v >= 1,
    (LORA, "model.lora_alpha"): lambda v: _is_number(v) and v > 0,
    (LORA, "model.lora_dropout"): lambda v: _is_number(v) and 0 <= v < 1,
    (LORA, "batch_size"): lambda v: _is_int(v) and v >= 1,
    (LORA, "max_steps_per_epoch"): lambda v: v is None or (_is_int(v) and v >= 1),
    (LORA, "compile"): lambda v: type(v) is bool or v is None,  # null runs as false
    (LORA, "clip_grad_norm"): lambda v: v is None or _is_number(v) or (isinstance(v, str) and _float_text(v)),
    (LORA, "lr_scheduler.num_warmup_steps"): _is_int,
    (LORA, "tokenizer.max_seq_len"): lambda v: v is None or _is_int(v),
    (FULL, "optimizer.lr"): lambda v: _is_number(v) and v > 0,
}


def _float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(ORACLE)), value=VALUES)
def test_checks_refuse_exactly_the_values_the_oracle_refuses(case, value):
    name, key = case
    found = at(key, name, value)
    errors = [f for f in found if not f.warning]
    assert len(found) <= 1, found  # never reported twice
    assert (errors == []) == ORACLE[case](value), (value, found)


@settings(max_examples=40, deadline=None)
@given(modules=st.lists(st.sampled_from(["q_proj", "k_proj", "v_proj", "output_proj", "o_proj", "gate_proj", "qproj"]),
                        max_size=4))
def test_lora_attn_modules_refuse_exactly_the_unknown_names(modules):
    found = at("model.lora_attn_modules", LORA, modules)
    unknown = [m for m in modules if m not in ("q_proj", "k_proj", "v_proj", "output_proj")]
    assert len(found) == (1 if unknown else 0)
    if unknown:
        assert f"got '{unknown[0]}'" in found[0].message


@settings(max_examples=60, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False, min_value=1e-12, max_value=1e6))
def test_lr_warnings_follow_the_optimizer_family(value):
    found = at("optimizer.lr", FULL, value)
    assert [f.warning for f in found] == ([True] if value > 0.1 else [])


# ----------------------------------------------------------------------------- end to end, speed, warm cache


def test_problems_and_warnings_land_on_the_generation_result(tmp_path):
    exp = {"experiment_name": "values", "base_config": LORA, "variables": {"lora_rank": [8, "eight"]},
           "controls": {"optimizer.lr": 2.0}}
    result = generate_configs(exp, output_dir=tmp_path / "x", write=False, strict=False)
    assert [(p.run_id, p.key) for p in result.problems] == [("run_001", "model.lora_rank")]
    assert "must be an integer, got 'eight'" in result.problems[0].message
    assert sorted((p.run_id, p.key) for p in result.warnings if p.key == "optimizer.lr") == [
        ("run_000", "optimizer.lr"), ("run_001", "optimizer.lr")]
    assert [r.validation for r in result.runs] == ["passed", "failed"]


def test_the_suggested_derived_expression_compiles_and_passes(tmp_path):
    exp = {"experiment_name": "alpha", "base_config": LORA, "variables": {"lora_rank": [8, 16]},
           "derived": {"lora_alpha": "{{ 2 * lora_rank }}", "lr_scheduler.num_warmup_steps":
                       "{{ (0.03 * max_steps_per_epoch * epochs) | int }}"},
           "controls": {"max_steps_per_epoch": 200}}
    result = generate_configs(exp, output_dir=tmp_path / "x", write=False, strict=False)
    assert result.problems == []
    assert [r.config["model"]["lora_alpha"] for r in result.runs] == [16, 32]
    assert [r.config["lr_scheduler"]["num_warmup_steps"] for r in result.runs] == [6, 6]


def test_64_runs_check_in_well_under_a_second():
    cfg, recipe = _BASES[LORA]
    list(check_types(cfg, recipe)), list(check_ranges(cfg, recipe))  # the first call may import torch
    runs = [changed(LORA, "model.lora_rank", r)[0] for r in range(1, 65)]
    start = time.perf_counter()
    for run in runs:
        list(check_types(run, recipe))
        list(check_ranges(run, recipe))
    assert time.perf_counter() - start < 0.5


WARM = textwrap.dedent("""
    import json, sys
    from omegaconf import OmegaConf
    from torchtune_config_writer.compile import registry
    from torchtune_config_writer.compile.checks.ranges import check_ranges
    from torchtune_config_writer.compile.checks.value_types import check_types
    cfg = OmegaConf.to_container(OmegaConf.load(registry.builtin_configs()[sys.argv[1]].path))
    cfg["model"]["lora_rank"] = "eight"
    found = [f.message for f in check_types(cfg, "lora_finetune_single_device")]
    found += [f.message for f in check_ranges(cfg, "lora_finetune_single_device")]
    print(json.dumps({"found": found, "torch": "torch" in sys.modules}))
""")


def test_a_warm_second_process_imports_nothing_and_says_the_same(tmp_path):
    env = {**os.environ, "TORCHTUNE_CONFIG_WRITER_CACHE": str(tmp_path / "cache")}

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", WARM, LORA], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold, warm = run(), run()
    assert cold["torch"] and not warm["torch"]
    assert warm["found"] == cold["found"] and any("'eight'" in m for m in warm["found"])
