import re

import pytest

from torchtune_config_writer.errors import TypeMismatchError
from torchtune_config_writer.compile.keys import Key
from torchtune_config_writer.compile.merge import apply, merge_value
from torchtune_config_writer.compile.yamlio import dump, load


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
