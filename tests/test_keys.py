import pytest

from torchtune_config_writer.errors import AmbiguousKeyError, ConflictingKeyError, UnknownKeyError
from torchtune_config_writer.compile.keys import ALIASES, Key, Setting, check_conflicts, check_nested, resolve_key
from torchtune_config_writer.compile.loaders import load_base_config
from torchtune_config_writer.compile.schema import load_experiment

from helpers import LORA_1B


@pytest.fixture(scope="module")
def base():
    return load_base_config(load_experiment({"experiment_name": "k", "base_config": LORA_1B})).data


@pytest.mark.parametrize(
    "raw, path",
    [
        ("model.lora_rank", "model.lora_rank"),
        ("lora_rank", "model.lora_rank"),  # unique leaf
        ("epochs", "epochs"),  # top level
        ("learning_rate", "optimizer.lr"),
        ("lr", "optimizer.lr"),
        ("num_warmup_steps", "lr_scheduler.num_warmup_steps"),
        ("dataset.data_files", "dataset.data_files"),  # accepted by the dataset builder's signature
        ("data_files", "dataset.data_files"),
    ],
)
def test_resolution(base, raw, path):
    assert resolve_key(raw, base).dotted == path


def test_aliases_point_at_real_keys_of_a_lora_config(base):
    for alias, target in ALIASES.items():
        if alias == "warmup_steps":
            continue  # also a real key of the profiler: see below
        assert resolve_key(alias, base).dotted == target, alias


def test_an_alias_never_hides_a_real_key_of_the_same_name(base):
    with pytest.raises(AmbiguousKeyError) as e:
        resolve_key("warmup_steps", base)
    assert "- lr_scheduler.num_warmup_steps\n    - profiler.warmup_steps" in str(e.value)
    assert resolve_key("warmup_steps", {"lr_scheduler": {"num_warmup_steps": 1}}).dotted == "lr_scheduler.num_warmup_steps"


def test_suggestions_never_repeat_the_typo_or_offer_component_paths():
    with pytest.raises(UnknownKeyError) as e:
        resolve_key("rank", {"model": {"_component_": "x.y"}, "optimizer": {"_component_": "torch.optim.AdamW"}})
    assert "Did you mean" not in str(e.value)
    with pytest.raises(UnknownKeyError) as e:
        resolve_key("~nothere", {"a": 1})
    assert "'+nothere'" not in str(e.value)


def test_ambiguous_short_name_lists_every_candidate(base):
    with pytest.raises(AmbiguousKeyError) as e:
        resolve_key("output_dir", {"a": {"output_dir": 1}, "b": {"output_dir": 2}})
    assert "a.output_dir" in str(e.value) and "b.output_dir" in str(e.value)
    with pytest.raises(UnknownKeyError):
        resolve_key("_component_", base)  # never resolved as a short name: it is in every component node


@pytest.mark.parametrize(
    "raw, suggestion",
    [
        ("epoch", "'epochs'"),
        ("model.lora_rnak", "'model.lora_rank'"),
        ("dataset.data_filez", "'dataset.data_files'"),
        ("optimizer.learning_rate", None),
        ("lora_rnk", "'model.lora_rank'"),
    ],
)
def test_unknown_keys_suggest(base, raw, suggestion):
    with pytest.raises(UnknownKeyError) as e:
        resolve_key(raw, base, "exp.yaml:3 (controls)")
    msg = str(e.value)
    assert msg.startswith("exp.yaml:3 (controls): unknown key")
    assert f"'+{raw}'" in msg  # tells how to add it on purpose
    if suggestion:
        assert f"Did you mean {suggestion}" in msg


def test_plus_adds_and_refuses_existing(base):
    assert resolve_key("+new.key", base) == Key("+new.key", ("new", "key"), "add")
    with pytest.raises(ConflictingKeyError, match="drop the '\\+'"):
        resolve_key("+epochs", base)


def test_tilde_deletes_existing_only(base):
    assert resolve_key("~model.lora_dropout", base).op == "delete"
    with pytest.raises(UnknownKeyError):
        resolve_key("~model.nope", base)


def test_nested_mapping_keys_are_checked(base):
    key = resolve_key("model", base)
    check_nested(key, {"lora_rank": 4}, base, "controls")
    with pytest.raises(UnknownKeyError, match="model.lora_rnk"):
        check_nested(key, {"lora_rnk": 4}, base, "controls")
    # a different component replaces the node: its keys are not the old component's business
    check_nested(key, {"_component_": "torchtune.models.llama3_2.llama3_2_1b", "whatever": 1}, base, "controls")


def test_conflicts_between_variables_and_controls():
    lr = Key("optimizer.lr", ("optimizer", "lr"))
    opt = Key("optimizer", ("optimizer",))
    var = Setting(Key("lr", ("optimizer", "lr")), "variables")
    with pytest.raises(ConflictingKeyError, match="both a variable"):
        check_conflicts([Setting(lr, "controls", 0.1)], [var])
    with pytest.raises(ConflictingKeyError, match="both a variable"):
        check_conflicts([Setting(opt, "controls", {"lr": 0.1})], [var])
    check_conflicts([Setting(opt, "controls", {"_component_": "torch.optim.SGD"})], [var])
    with pytest.raises(ConflictingKeyError, match="both set"):
        check_conflicts([], [Setting(lr, "variables"), var])
    with pytest.raises(ConflictingKeyError, match=r"\(variables and derived\) both set"):
        check_conflicts([], [var, Setting(lr, "derived")])


def test_an_included_control_yields_to_the_including_file():
    lr = Key("optimizer.lr", ("optimizer", "lr"))
    included, own = Setting(lr, "controls", 0.1, layer=0), Setting(Key("lr", lr.path), "controls", 0.2, layer=1)
    check_conflicts([included, own], [])                           # the later file wins
    check_conflicts([included], [Setting(lr, "variables", layer=1)])
    with pytest.raises(ConflictingKeyError, match="both set"):
        check_conflicts([own, Setting(lr, "controls", 0.3, layer=1)], [])
    with pytest.raises(ConflictingKeyError, match="both a variable"):  # a variable of an included file does not win
        check_conflicts([own], [Setting(lr, "variables", layer=0)])
