"""What is written is what is meant: every config reads back, the way torchtune reads it, as the config validated.

torchtune loads a config with ``OmegaConf.load``; these tests read the written
text with that loader (or with OmegaConf.load itself) and compare with each
run's plain dict, on torchtune's shipped configs and on awkward swept values.
"""

from __future__ import annotations

import math
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from omegaconf import OmegaConf

from torchtune_config_writer import generate_configs
from torchtune_config_writer.compile import readback, registry
from torchtune_config_writer.compile.compiler import compile_experiment
from torchtune_config_writer.compile.loaders import _read
from torchtune_config_writer.compile.readback import WrittenConfigError, check_written
from torchtune_config_writer.compile.schema import load_experiment
from torchtune_config_writer.compile.writer import write_experiment_dir
from torchtune_config_writer.compile.yamlio import comment_text, dump, omegaconf_loader
from torchtune_config_writer.expdir import format_parameters

from helpers import LORA_1B

# YAML 1.1 (what torchtune reads) ends a line at each of these
LINE_BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029"]
# and refuses these anywhere in a file (a tab and U+FEFF are allowed, but invisible)
CONTROLS = ["\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x1c", "\x7f", "\x9f", "\t", "\ufeff"]
ODD = ["yes", "off", "null", "~", "1e-3", "0x1F", "1:30", "#c", "a #c", "a: b", "- a", "'q'", '"', "${output_dir}/x",
       "---", "...", "%YAML 1.1", "&a", "*a", "!!str x", "? x", "|", ">", "[a", "{a", "", " ", "é", "a\\nb"]


def exact_reading(text: str):
    """What OmegaConf's loader (torchtune's) reads from ``text``; 'unreadable' when it refuses it."""
    try:
        return yaml.load(text, Loader=omegaconf_loader())
    except yaml.YAMLError:
        return "unreadable"


def runs_of(variables: dict, controls: dict | None = None):
    experiment = {"experiment_name": "w", "base_config": LORA_1B, "variables": variables, "controls": controls or {}}
    return generate_configs(experiment, write=False, validate=False).runs


# ----------------------------------------------------------------------------- the header's parameters


@pytest.mark.parametrize("char", LINE_BREAKS + CONTROLS, ids=repr)
def test_comment_text_keeps_a_swept_value_on_its_comment_line(char):
    run = runs_of({"+my_tag": [f"a{char}limit: 7", "b"]})[0]
    assert run.plain["my_tag"] == f"a{char}limit: 7"
    line = "# Parameters: " + comment_text(format_parameters(run.parameters))
    assert len(line.splitlines()) == 1 and line.isprintable()  # splitlines breaks at more than YAML does
    check_written(run.run_id, line + "\n" + run.text, run.plain)
    check_written(run.run_id, run.text, run.plain)  # the header generate writes


@pytest.mark.parametrize("char", LINE_BREAKS, ids=repr)
def test_a_raw_line_break_in_the_header_is_caught_with_the_key_it_leaks(char):
    run = runs_of({"+my_tag": [f"a{char}limit: 7", "b"]})[0]
    leaking = "# Parameters: " + format_parameters(run.parameters) + "\n" + run.text
    with pytest.raises(WrittenConfigError) as info:
        check_written(run.run_id, leaking, run.plain)
    assert str(info.value).startswith("internal error (a bug of torchtune_config_writer, please report it): run_000: ")
    assert "torchtune would read 'limit' = 7 from the config written, but the config meant has no 'limit'" in str(info.value)


@pytest.mark.parametrize("char", ["\x00", "\x0b", "\x1c", "\x7f"], ids=repr)
def test_a_raw_control_character_in_the_header_is_caught(char):
    run = runs_of({"+my_tag": [f"a{char}b", "b"]})[0]
    with pytest.raises(WrittenConfigError, match=r"run_000: the config written cannot be read back as YAML \(.*character"):
        check_written(run.run_id, "# Parameters: " + format_parameters(run.parameters) + "\n" + run.text, run.plain)


def test_a_leaked_key_that_the_config_already_has_is_caught():
    run = runs_of({"+my_tag": ["a\nepochs: 99", "b"]})[0]
    leaking = "# Parameters: " + format_parameters(run.parameters) + "\n" + run.text
    with pytest.raises(WrittenConfigError, match="run_000: the config written cannot be read back as YAML .*duplicate key epochs"):
        check_written(run.run_id, leaking, run.plain)


# ----------------------------------------------------------------------------- what a difference is


def test_a_different_value_is_reported_with_its_path_and_both_values():
    run = runs_of({"lora_rank": [8, 16]})[1]
    meant = {**run.plain, "model": {**run.plain["model"], "lora_rank": 32}}
    with pytest.raises(WrittenConfigError) as info:
        check_written(run.run_id, run.text, meant)
    assert "run_001: the config meant has 'model.lora_rank' = 32, but torchtune would read 16 from the config written" in str(info.value)


@pytest.mark.parametrize("meant, written", [(1.0, "1"), (1, "1.0"), (True, "1"), (1, "True"), ("1", "1"), (None, "''"),
                                            ([1], "1"), ({"a": 1}, "{}")])
def test_equal_in_python_is_not_enough(meant, written):
    with pytest.raises(WrittenConfigError, match="'x"):
        check_written("run_000", f"x: {written}\n", {"x": meant})


def test_nan_reads_back_as_nan_and_a_missing_key_is_reported():
    check_written("run_000", "x: .nan\ny: [1, 2]\n", {"x": math.nan, "y": [1, 2]})
    with pytest.raises(WrittenConfigError, match="the config meant has 'z' = 3, but torchtune would not find 'z'"):
        check_written("run_000", "x: 1\n", {"x": 1, "z": 3})


def test_generate_writes_nothing_when_a_config_reads_back_differently(tmp_path):
    exp = load_experiment({"experiment_name": "w", "base_config": LORA_1B, "variables": {"lora_rank": [8, 16]}})
    result = compile_experiment(exp, tmp_path / "exp")
    result.runs[1].text = result.runs[1].text.replace("lora_rank: 16", "lora_rank: 61")
    with pytest.raises(WrittenConfigError, match="run_001: the config meant has 'model.lora_rank' = 16, but torchtune would read 61"):
        write_experiment_dir(result)
    assert not (tmp_path / "exp").exists() and list(tmp_path.iterdir()) == []


def test_written_files_are_what_omegaconf_load_reads(tmp_path):
    variables = {"+my_tag": ["yes", "a\nb: 1", "x\u2028y: 2", "1e-3", "#c", "é\x85"], "lora_rank": [8, 16]}
    result = generate_configs({"experiment_name": "w", "base_config": LORA_1B, "variables": variables},
                              output_dir=tmp_path / "exp", validate=False)
    assert len(result.runs) == 12
    for run in result.runs:
        loaded = OmegaConf.to_container(OmegaConf.load(run.config_path))  # exactly what torchtune does
        assert readback._same(run.plain, loaded), run.run_id
        assert loaded["my_tag"] == run.parameters["my_tag"]


# ----------------------------------------------------------------------------- reading by pieces is exact


def test_reading_by_pieces_equals_omegaconf_on_every_shipped_config():
    header = "# Generated by torchtune_config_writer\n# Parameters: " + comment_text("a=x\ny: 1") + "\n\n"
    differ = []
    for name, config in sorted(registry.builtin_configs().items()):
        if not config.path.is_file():
            continue
        text = header + dump(_read(config.path))
        fast, exact = readback._read_by_parts(text), exact_reading(text)
        if fast is None or not isinstance(exact, dict) or not readback._same(exact, fast):
            differ.append(name)
    assert differ == []


scalars = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.lists(st.sampled_from(LINE_BREAKS + CONTROLS + [" ", "#", ":", "-", "'", '"', "a", "1", ".", "e"]), max_size=8).map("".join),
    st.sampled_from(ODD),
    st.integers(), st.floats(), st.booleans(), st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scalars, st.booleans())
def test_reading_by_pieces_never_differs_from_omegaconf(value, escaped):
    """Where the fast reading answers, it is OmegaConf's reading, even of a broken header or an odd value."""
    parameters = format_parameters({"my_tag": value})
    header = "# Parameters: " + (comment_text(parameters) if escaped else parameters) + "\n"
    meant = {"output_dir": "/o/run_000", "k": value, "lst": [value, 1], "m": {"x": value}, "z": 2}
    text = header + dump(meant)
    exact, fast = exact_reading(text), readback._read_by_parts(text)
    if fast is not None:
        assert isinstance(exact, dict) and readback._same(exact, fast)
    if escaped:  # our own header and dumper: always read back as meant
        assert readback._same(meant, exact)
        check_written("run_000", text, meant)


def test_a_sweep_reads_each_shared_piece_once():
    runs = runs_of({"lora_rank": list(range(1, 21)), "learning_rate": [round(1e-5 * i, 8) for i in range(1, 11)]})
    assert len(runs) == 200
    readback._read_piece.cache_clear()
    start = time.process_time()
    for run in runs:
        check_written(run.run_id, run.text, run.plain)
    seconds = time.process_time() - start
    info = readback._read_piece.cache_info()
    # one new piece per run (its header and output_dir), one per lora_rank and per lr, and the shared rest once
    assert info.misses <= 200 + 20 + 10 + 40, info
    assert info.hits >= 200 * 15, info
    # about 0.06 ms a run; each whole text read with OmegaConf's loader takes 3.4 ms, with libyaml 0.37 ms
    assert seconds < 0.4, seconds


# texts on which libyaml and PyYAML (OmegaConf's loader) disagree, found by fuzzing the two: reading by
# pieces must fall back to OmegaConf's loader there, not answer with libyaml's reading
DISAGREE = ["# a\n\ufeff\nx: 1\ny: 2\n", "x: 1\t\ny: 2\n", "x: a\tb\ny: 2\n", "x: !\ny: 2\n", "x: |#c\ny: 2\n",
            "# P: \nb:\u2029...\noutput_dir: /o\nk: 1\n", "# a\n%YAML 1.1\nx: 1\ny: 2\n", "x: 1\n---\ny: 2\nz: 1\n",
            "x: \ud800\ny: 2\n"]
FRAGMENTS = ["x", "y", ": ", "- ", "  ", "\n", "\n  ", "# c", " #c", "'", '"', "[", "]", "{", "}", ", ", "null", "1e-3",
             "---", "...", "%YAML 1.1", "&a ", "*a", "!!str ", "? ", "|", ">", "|-", "\n   t"] + LINE_BREAKS + CONTROLS


@pytest.mark.parametrize("text", DISAGREE, ids=repr)
def test_reading_by_pieces_leaves_libyaml_s_disagreements_to_omegaconf(text):
    exact, fast = exact_reading(text), readback._read_by_parts(text)
    assert fast is None or (isinstance(exact, dict) and readback._same(exact, fast))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_reading_by_pieces_never_differs_from_omegaconf_on_any_text(text):
    exact, fast = exact_reading(text), readback._read_by_parts(text)
    assert fast is None or (isinstance(exact, dict) and readback._same(exact, fast))
