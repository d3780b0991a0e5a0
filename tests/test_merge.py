import re
from collections import Counter

import pytest
import yaml

from torchtune_config_writer import generate_configs
from torchtune_config_writer.errors import TypeMismatchError
from torchtune_config_writer.compile import registry
from torchtune_config_writer.compile.keys import Key
from torchtune_config_writer.compile.loaders import _read, load_base_config
from torchtune_config_writer.compile.merge import apply, check_values, merge_value
from torchtune_config_writer.compile.schema import load_experiment, to_plain
from torchtune_config_writer.compile.yamlio import dump, load

from helpers import LORA_1B


def tree():
    return load(
        "model:\n  _component_: a.B\n  rank: 8  # keep me\n  modules: [q, v]\n"
        "optimizer:\n  _component_: torch.optim.AdamW\n  lr: 3e-4\n  fused: True\n"
        "output_dir: /tmp/x\nlog_dir: ${output_dir}/logs\nseed: null\n"
    )


def k(dotted, op="set"):
    return Key(dotted, tuple(dotted.split(".")), op)


def test_mappings_deep_merge_and_keep_comments():
    t = tree()
    apply(t, k("model"), {"rank": 16})
    assert t["model"]["rank"] == 16 and t["model"]["_component_"] == "a.B" and t["model"]["modules"] == ["q", "v"]
    assert re.search(r"\n  rank: 16 +# keep me\n", dump(t))


def test_lists_replace():
    t = tree()
    apply(t, k("model.modules"), ["o"])
    assert list(t["model"]["modules"]) == ["o"]


def test_scalar_onto_mapping_and_mapping_onto_scalar_are_type_mismatches():
    with pytest.raises(TypeMismatchError, match="'model'"):
        apply(tree(), k("model"), 5)
    with pytest.raises(TypeMismatchError, match="'output_dir'"):
        apply(tree(), k("output_dir"), {"a": 1})
    with pytest.raises(TypeMismatchError, match="'model.rank'"):
        apply(tree(), k("model"), {"rank": {"x": 1}})


def test_null_in_the_base_takes_any_value():
    t = tree()
    apply(t, k("seed"), {"a": 1})
    assert dict(t["seed"]) == {"a": 1}


def test_different_component_replaces_the_node_whole():
    t = tree()
    apply(t, k("optimizer"), {"_component_": "torch.optim.SGD", "lr": 0.1})
    assert dict(t["optimizer"]) == {"_component_": "torch.optim.SGD", "lr": 0.1}


def test_same_component_merges():
    t = tree()
    apply(t, k("optimizer"), {"_component_": "torch.optim.AdamW", "lr": 0.1})
    assert t["optimizer"]["fused"] is True and t["optimizer"]["lr"] == 0.1


def test_interpolations_are_kept_verbatim():
    t = tree()
    apply(t, k("log_dir"), "${output_dir}/other")
    assert "log_dir: ${output_dir}/other" in dump(t)


def test_add_creates_parents_and_delete_removes():
    t = tree()
    apply(t, k("new.deep.key", "add"), 1)
    apply(t, k("model.modules", "delete"), None)
    assert t["new"]["deep"]["key"] == 1 and "modules" not in t["model"]


def test_nested_tilde_and_plus_inside_a_mapping_override():
    merged = merge_value({"a": 1, "b": 2}, {"~a": None, "+c": 3}, "x")
    assert dict(merged) == {"b": 2, "c": 3}


# ----------------------------------------------------------------------------- lists and scalars


def test_scalar_onto_list_is_a_type_mismatch_with_the_list_to_write():
    with pytest.raises(TypeMismatchError) as info:
        apply(tree(), k("model.modules"), "q")
    assert "'model.modules': the base config has a list (['q', 'v'])" in str(info.value)
    assert "Write a list: model.modules: [q]" in str(info.value)


def test_list_and_null_onto_list_and_list_onto_scalar_stay_allowed():
    t = tree()
    apply(t, k("model.modules"), None)       # clip_grad_norm: null and the like
    apply(t, k("log_dir"), ["a", "b"])       # data_files: one file or a list of files
    apply(t, k("seed"), ["x"])               # null takes anything
    assert t["model"]["modules"] is None and list(t["log_dir"]) == ["a", "b"] and list(t["seed"]) == ["x"]


def test_a_swept_scalar_onto_a_shipped_list_names_every_run_s_list():
    base = load_base_config(load_experiment({"experiment_name": "e", "base_config": "eleuther_evaluation"})).data
    with pytest.raises(TypeMismatchError) as info:
        check_values(Key("tasks", ("tasks",)), ["truthfulqa_mc2", "hellaswag"], base, "experiment.yaml:4 (variables)")
    assert str(info.value).startswith("experiment.yaml:4 (variables): 'tasks': the base config has a list")
    assert str(info.value).endswith("write one list per run: tasks: [[truthfulqa_mc2], [hellaswag]]")
    check_values(Key("tasks", ("tasks",)), [["truthfulqa_mc2"], ["hellaswag"]], base, "variables")  # the fix passes


def test_a_swept_scalar_onto_a_shipped_list_fails_the_compilation():
    experiment = {"experiment_name": "e", "base_config": "eleuther_evaluation",
                  "variables": {"tasks": ["truthfulqa_mc2", "hellaswag"]}}
    with pytest.raises(TypeMismatchError, match=r"write one list per run: tasks: \[\[truthfulqa_mc2\], \[hellaswag\]\]"):
        generate_configs(experiment, write=False, validate=False)
    experiment["variables"]["tasks"] = [["truthfulqa_mc2"], ["hellaswag"]]
    runs = generate_configs(experiment, write=False, validate=False).runs
    assert [r.plain["tasks"] for r in runs] == [["truthfulqa_mc2"], ["hellaswag"]]


# ----------------------------------------------------------------------------- comments outside a replaced value

QUOTED = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")
COMMENT = re.compile(r"(?:^|\s)(#.*)$")
SHIPPED = sorted((name, c.path) for name, c in registry.builtin_configs().items() if c.path.is_file())


def comment_lines(text: str, skip: range = range(0)) -> Counter:
    """Every comment of ``text`` (its text, counted), except those on the lines in ``skip``."""
    found = Counter()
    for number, line in enumerate(text.splitlines()):
        match = COMMENT.search(QUOTED.sub(lambda q: "x" * len(q.group()), line))
        if match and number not in skip:
            found[line[match.start(1):].rstrip()] += 1
    return found


def node_lines(text: str, key: str) -> range:
    """The lines of the top-level entry ``key``: from its key to the last line of its value."""
    def last_line(node):
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.value and not node.flow_style:
            item = node.value[-1]
            return last_line(item[1] if isinstance(node, yaml.MappingNode) else item)
        return node.end_mark.line
    for k_node, v_node in yaml.compose(text, Loader=yaml.CSafeLoader).value:
        if k_node.value == key:
            return range(k_node.start_mark.line, last_line(v_node) + 1)
    raise KeyError(key)


def has_loss(path) -> bool:
    return isinstance(yaml.load(path.read_text(), Loader=yaml.CSafeLoader).get("loss"), dict)


LOSS_CONFIGS = [(name, path) for name, path in SHIPPED if has_loss(path)]


def test_every_shipped_config_keeps_its_comments_through_a_plain_round_trip():
    assert len(SHIPPED) >= 150
    lost = {name: comment_lines(path.read_text()) - comment_lines(dump(_read(path))) for name, path in SHIPPED}
    assert {name: dict(c) for name, c in lost.items() if c} == {}


@pytest.mark.parametrize("op", ["swap", "delete"])
def test_a_loss_swap_or_delete_keeps_every_comment_outside_the_old_loss_in_every_shipped_config(op):
    assert len(LOSS_CONFIGS) >= 130
    lost = {}
    for name, path in LOSS_CONFIGS:
        text = path.read_text()
        outside = comment_lines(text, node_lines(text, "loss"))
        data = _read(path)
        if op == "swap":
            apply(data, k("loss"), {"_component_": "torch.nn.MSELoss", "reduction": "sum"})
        else:
            apply(data, k("loss", "delete"), None)
        missing = outside - comment_lines(dump(data))
        if missing:
            lost[name] = dict(missing)
    assert lost == {}


def test_a_loss_swap_keeps_the_blank_line_and_section_header_after_it():
    data = _read(registry.find_config(LORA_1B).path)
    apply(data, k("loss"), {"_component_": "torch.nn.MSELoss"})
    assert "\n\nloss:\n  _component_: torch.nn.MSELoss\n\n# Training\nepochs: 1\n" in dump(data)


def test_a_new_key_goes_above_the_next_section_header_not_below_it():
    data = _read(registry.find_config(LORA_1B).path)
    apply(data, k("model.extra", "add"), 1)
    apply(data, k("optimizer"), {"betas": [0.9, 0.95]})
    text = dump(data)
    assert "  lora_dropout: 0.0\n  extra: 1\n\n# Tokenizer\ntokenizer:\n" in text
    assert "  lr: 3e-4\n  betas: [0.9, 0.95]\nlr_scheduler:\n" in text
    assert to_plain(load(text))["model"]["extra"] == 1


def test_a_mapping_onto_null_keeps_the_comments_after_the_null_below_it():
    t = load("seed: null  # beside\n\n# Section\nx: 1\n")
    apply(t, k("seed"), {"a": 1})
    assert dump(t) == "seed:       # beside\n  a: 1\n\n# Section\nx: 1\n"


def test_comments_inside_the_replaced_value_go_with_it():
    t = load("loss:  # on the key\n  # about A\n  _component_: a.A  # beside\n  w: 1\n  # w: 2, A only\n\n# Training\nepochs: 1\n")
    apply(t, k("loss"), {"_component_": "b.B"})
    assert dump(t) == "loss:  # on the key\n  _component_: b.B\n\n# Training\nepochs: 1\n"


def test_commented_flow_list_is_written_as_a_block_list_with_its_comments():
    path = registry.find_config("mistral/7B_full_ppo_low_memory").path
    data = _read(path)
    text = dump(data)
    assert "stop_token_ids:\n  - 2  # eos_id\n  - 28723  # mistral \".\" token\nwhiten_rewards: False\n" in text
    assert to_plain(load(text)) == to_plain(data)
    assert data["stop_token_ids"].fa.flow_style()  # the caller's tree is left as it was
