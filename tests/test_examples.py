"""The shipped examples work, and the examples in the documentation stay true.

* Every experiment in example_configs/*.yaml compiles and validates (in memory).
* Every ```yaml block of README.md, SPEC.md and appendices A and F that is an
  experiment (it has ``experiment_name``) is compiled the same way, from a file
  in a temporary directory that also holds a copy of
  example_configs/custom_base.yaml. Conventions inside the documents:

  - a first line ``# error: ErrorClass`` means the block (without that line)
    must fail with that error; when the next block is a ```text block starting ``Error:``, it must be
    the message, exactly (the temporary directory reads as /home/me/study);
  - a following ```yaml block whose first line is ``# result`` (or
    ``# result run_002``) is an excerpt of that run's config (default run_000):
    every key it shows must have that value; ``# absent: a.b`` lines say a key
    must not be there.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from torchtune_config_writer import errors, generate_configs
from torchtune_config_writer.compile.schema import parse_yaml, to_plain

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "example_configs"
DOCS = ["README.md", "SPEC.md", "appendices/A_merge_semantics.md", "appendices/F_experiment_definition.md"]
STUDY = "/home/me/study"  # how the temporary directory appears in documented messages


def _is_experiment(path: Path) -> bool:
    data = parse_yaml(path.read_text(), str(path))
    return isinstance(data, dict) and "experiment_name" in data


EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.yaml") if _is_experiment(p))


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"lora_rank_study.yaml", "rank_lr_grid.yaml", "custom_base_experiment.yaml"} <= names
    assert not _is_experiment(EXAMPLES_DIR / "custom_base.yaml")  # a torchtune config, used as a base


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_compiles_and_validates(path):
    result = generate_configs(path, write=False)
    assert result.ok and result.validated, [str(p) for p in result.problems]
    assert all(run.validation == "passed" for run in result.runs)
    exp = result.experiment
    grid = 1  # every axis's size, multiplied; exclusion then removes runs
    for size in [len(v) for v in exp.variables.values()] + [len(next(iter(g.values()))) for g in exp.zip] \
            + [exp.sample.n if exp.sample else 1, len(exp.seeds or [0])]:
        grid *= size
    assert result.counts.combinations * result.counts.seeds == grid
    assert len(result.runs) == grid - result.counts.excluded == result.counts.runs
    assert (result.counts.excluded > 0) == bool(exp.exclude)


# ----------------------------------------------------------------------------- documentation

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def _doc_cases():
    cases = []
    for doc in DOCS:
        path = ROOT / doc
        if not path.is_file():
            continue
        text = path.read_text()
        blocks = [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)]
        for i, (lang, body, line) in enumerate(blocks):
            if lang != "yaml" or not re.search(r"^experiment_name:", body, re.M):
                continue
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            cases.append(pytest.param(body, following, id=f"{doc}:{line}"))
    return cases


DOC_CASES = _doc_cases()


def test_documents_have_examples():
    assert len(DOC_CASES) >= 10


@pytest.mark.parametrize("body, following", DOC_CASES)
def test_documented_example(tmp_path, monkeypatch, body, following):
    if "bitsandbytes" in body and importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("documents the error seen without bitsandbytes")
    shutil.copy(EXAMPLES_DIR / "custom_base.yaml", tmp_path / "custom_base.yaml")
    expected_error = re.match(r"#\s*error:\s*(\w+)[^\n]*\n", body)
    if expected_error:
        body = body[expected_error.end():]  # the marker is not part of the file: line numbers start below it
    (tmp_path / "experiment.yaml").write_text(body)
    monkeypatch.chdir(tmp_path)
    if expected_error:
        cls = getattr(errors, expected_error.group(1))
        with pytest.raises(cls) as info:
            generate_configs("experiment.yaml", write=False)
        if following and following[0] == "text" and following[1].startswith("Error:"):
            actual = "Error: " + str(info.value).replace(str(tmp_path.resolve()), STUDY).replace(str(tmp_path), STUDY)
            assert _squash(actual) == _squash(following[1])
        return
    result = generate_configs("experiment.yaml", write=False)
    assert result.ok, [str(p) for p in result.problems]
    if following and following[0] == "yaml" and following[1].lstrip().startswith("# result"):
        _check_excerpt(result, following[1])


def _check_excerpt(result, excerpt: str) -> None:
    header = excerpt.lstrip().splitlines()[0]
    wanted = re.search(r"run_\d+", header)
    run_id = wanted.group(0) if wanted else "run_000"
    run = next(r for r in result.runs if r.run_id == run_id)
    shown = to_plain(parse_yaml(excerpt, "excerpt")) or {}
    _assert_subset(shown, run.config, "")
    for dotted in re.findall(r"^#\s*absent:\s*(\S+)", excerpt, re.M):
        node = run.config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        assert not (isinstance(node, dict) and last in node), f"{dotted} should be absent in {run_id}"


def _assert_subset(expected, actual, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where or 'config'}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}{key} is missing"
            _assert_subset(value, actual[key], f"{where}{key}.")
    else:
        assert expected == actual and type(expected) is type(actual), f"{where.rstrip('.')}: {actual!r} != {expected!r}"


def _squash(text: str) -> str:
    return " ".join(text.split())
