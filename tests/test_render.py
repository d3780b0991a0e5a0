"""The fast text-patching path must give exactly what a full dump gives."""

import re

from hypothesis import given, settings, strategies as st

from torchtune_config_writer.compile.keys import Key
from torchtune_config_writer.compile.loaders import load_base_config
from torchtune_config_writer.compile.render import Renderer
from torchtune_config_writer.compile.schema import load_experiment

from helpers import LORA_1B

BASE = load_base_config(load_experiment({"experiment_name": "r", "base_config": LORA_1B})).data
RENDERER = Renderer(BASE)
PATHS = [("model", "lora_rank"), ("optimizer", "lr"), ("epochs",), ("output_dir",), ("dtype",),
         ("tokenizer", "max_seq_len"), ("seed",), ("compile",)]

scalars = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
    st.sampled_from(["yes", "no", "null", "1e-3", "~", "${output_dir}/x", "a: b", "#x", "- a", "'q'", '"', "on"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), scalars), min_size=1, max_size=4, unique_by=lambda t: t[0]))
def test_fast_path_equals_full_dump(overrides):
    keys = [(Key(".".join(p), p), v) for p, v in overrides]
    fast_text, fast_plain = RENDERER.render(keys)
    slow_text, slow_plain = RENDERER._render_slow(keys)
    assert fast_text == slow_text
    assert fast_plain == slow_plain


def test_fast_path_is_taken_for_scalars():
    text, _ = RENDERER.render([(Key("r", ("model", "lora_rank")), 4)])
    assert re.search(r"\n  lora_rank: 4 +# higher increases accuracy and memory\n", text)
    assert RENDERER._slots[("model", "lora_rank")] is not None
