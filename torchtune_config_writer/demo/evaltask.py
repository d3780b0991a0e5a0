"""The demo's tiny evaluation task: count the words of a short phrase.

``build_eval_task(root)`` writes, deterministically and without any download:

- ``data/count_train.json`` and ``data/count_heldout.json``: alpaca-style records
  (``instruction`` / ``input`` / ``output``) for ``alpaca_dataset(source="json")``;
- ``tasks/count_mc.yaml`` + ``tasks/count_mc.jsonl``: a local lm-eval
  ``multiple_choice`` task (``include_path`` is ``tasks/``): the prompt, and the
  counts 2-7 as choices;
- ``evals/count.py``: an inspect-ai task ``count`` over the same items (generate,
  then the answer must begin with the count).

``build_hf_checkpoint`` writes a Hugging Face format copy of the tiny model
(safetensors, config.json, tokenizer files with llama2's chat template), for
runs whose epoch folders inspect-ai should read.

Every phrase is 2-7 words drawn from the words the demo tokenizer was trained
on (each is one SentencePiece piece), and no phrase is in two of the three
sets; each count is equally frequent. A model that has not learned to count
picks its favourite digit for every item and scores 1/6; one that counts
scores well above (full finetuning of the random-init demo model, lr 3e-3,
batch 8, 300 steps: 1.0).

The prompts are written the way the model sees its training records, token for
token: ``alpaca_dataset`` puts the record into torchtune's alpaca prompt, and
``llama2_tokenizer`` wraps that in ``[INST] ... [/INST]``; its SentencePiece
model turns every run of whitespace (the template's blank lines) into one
space, so the prompt is written with single spaces and encodes to exactly the
training tokens (``tests/test_evaluate.py`` checks it). The BOS token that
starts every training sequence cannot be written in text: the evaluation
program adds it (``add_bos`` in an lm_eval config; transformers' tokenizer
adds it for inspect).

    >>> files = build_eval_task(Path("/tmp/evt"))                      # doctest: +SKIP
    >>> files.lm_eval_include, files.inspect_task_spec                 # doctest: +SKIP
    (PosixPath('/tmp/evt/tasks'), '/tmp/evt/evals/count.py@count')
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

#: The words phrases are made of: all in the demo tokenizer's corpus, each a single piece.
WORDS = ("cat", "robot", "friend", "teacher", "team", "bird", "river", "model", "likes", "sees", "builds",
         "finds", "moves", "reads", "paints", "red", "apples", "tall", "trees", "old", "books", "bright",
         "stars", "quiet", "rooms", "blue", "boxes", "fast", "trains", "warm", "bread", "morning", "sea",
         "night", "garden", "lunch", "hill")
MIN_WORDS, MAX_WORDS = 2, 7
INSTRUCTION = "How many words are in the sentence?"
NUM_TRAIN, NUM_HELDOUT, NUM_MC = 400, 60, 80
SEED = 7

LM_EVAL_TASK = "count_mc"
INSPECT_TASK = "count"

# torchtune's alpaca prompt for a record with an input (torchtune.data.AlpacaToMessages), blank lines
# written as the single spaces the tokenizer makes of them, inside llama2's [INST] ... [/INST].
_ALPACA = ("Below is an instruction that describes a task, paired with an input that provides further context. "
           "Write a response that appropriately completes the request. "
           "### Instruction: {instruction} ### Input: {input} ### Response:")


@dataclass(frozen=True)
class EvalTaskFiles:
    """Absolute paths of a built evaluation task."""

    root: Path
    train: Path
    """Training records (alpaca JSON)."""
    heldout: Path
    """Held-out records (alpaca JSON), disjoint from the training ones."""
    lm_eval_include: Path
    """The folder to pass as lm-eval's ``include_path``."""
    lm_eval_task: Path
    lm_eval_items: Path
    inspect_file: Path

    @property
    def lm_eval_task_name(self) -> str:
        return LM_EVAL_TASK

    @property
    def inspect_task_spec(self) -> str:
        """``/abs/evals/count.py@count``, as inspect's ``eval`` takes it."""
        return f"{self.inspect_file}@{INSPECT_TASK}"


def eval_task_paths(root: Path) -> EvalTaskFiles:
    """Where ``build_eval_task(root)`` puts each file (nothing is written)."""
    root = Path(root).expanduser().resolve()
    return EvalTaskFiles(
        root=root,
        train=root / "data" / "count_train.json",
        heldout=root / "data" / "count_heldout.json",
        lm_eval_include=root / "tasks",
        lm_eval_task=root / "tasks" / f"{LM_EVAL_TASK}.yaml",
        lm_eval_items=root / "tasks" / f"{LM_EVAL_TASK}.jsonl",
        inspect_file=root / "evals" / f"{INSPECT_TASK}.py",
    )


def build_eval_task(root: Path) -> EvalTaskFiles:
    """Write the training and held-out data, the lm-eval task and the inspect task under ``root``.

    Deterministic: the same root gets the same bytes; files already equal are not rewritten.

    >>> files = build_eval_task(Path("/tmp/evt"))                      # doctest: +SKIP
    >>> len(json.loads(files.train.read_text()))                       # doctest: +SKIP
    400
    """
    files = eval_task_paths(root)
    train, heldout, mc = _split(random.Random(SEED))
    _write(files.train, json.dumps(train, indent=1) + "\n")
    _write(files.heldout, json.dumps(heldout, indent=1) + "\n")
    _write(files.lm_eval_items, "".join(json.dumps(_mc_item(r)) + "\n" for r in mc))
    _write(files.lm_eval_task, _task_yaml(files.lm_eval_items))
    _write(files.inspect_file, _INSPECT_SOURCE)
    return files


def alpaca_prompt(record: dict[str, str]) -> str:
    """The user turn of a record as the model reads it, whitespace collapsed as the tokenizer does.

    >>> alpaca_prompt({"instruction": "How many words are in the sentence?", "input": "red apples"})[-45:]
    'sentence? ### Input: red apples ### Response:'
    """
    return _ALPACA.format(instruction=record["instruction"], input=record["input"])


def chat_prompt(record: dict[str, str]) -> str:
    """``alpaca_prompt`` inside llama2's ``[INST] ... [/INST]``: the text before the answer."""
    return f"[INST] {alpaca_prompt(record)} [/INST]"


def _split(rng: random.Random) -> tuple[list[dict[str, str]], ...]:
    """Three disjoint lists of records: train, held-out, multiple choice; counts spread evenly."""
    seen: set[str] = set()
    sets = []
    for size in (NUM_TRAIN, NUM_HELDOUT, NUM_MC):
        records = []
        while len(records) < size:
            count = MIN_WORDS + len(records) % (MAX_WORDS - MIN_WORDS + 1)  # each count equally often
            phrase = " ".join(rng.choice(WORDS) for _ in range(count))
            if phrase in seen:
                continue
            seen.add(phrase)
            records.append({"instruction": INSTRUCTION, "input": phrase, "output": str(count)})
        rng.shuffle(records)
        sets.append(records)
    return tuple(sets)


def _mc_item(record: dict[str, str]) -> dict[str, object]:
    choices = [str(n) for n in range(MIN_WORDS, MAX_WORDS + 1)]
    return {"prompt": chat_prompt(record), "message": alpaca_prompt(record), "choices": choices,
            "answer": choices.index(record["output"]), "target": record["output"], "input": record["input"]}


def _task_yaml(items: Path) -> str:
    # JSON strings are valid YAML scalars: any path survives quoting.
    return (
        "# Written by torchtune_config_writer.demo.evaltask: count the words of a phrase,\n"
        f"# choices {MIN_WORDS}-{MAX_WORDS}; the prompts are the training prompts, token for token.\n"
        f"task: {LM_EVAL_TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(items))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: prompt\n"
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        "  version: 1.0\n"
    )


_INSPECT_SOURCE = '''\
"""Count the words of a phrase (written by torchtune_config_writer.demo.evaltask).

The items are lm-eval's count_mc items (../tasks/count_mc.jsonl). The model
gets the alpaca prompt as a user message (its tokenizer's chat template adds
[INST] ... [/INST]) and must answer with the count; greedy decoding, a few tokens.
"""

import json
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import GenerateConfig
from inspect_ai.scorer import match
from inspect_ai.solver import generate

ITEMS = Path(__file__).resolve().parent.parent / "tasks" / "count_mc.jsonl"


@task
def count() -> Task:
    rows = [json.loads(line) for line in ITEMS.read_text().splitlines() if line.strip()]
    samples = [Sample(input=row["message"], target=row["target"], id=i) for i, row in enumerate(rows)]
    return Task(dataset=MemoryDataset(samples, name="count"), solver=generate(),
                scorer=match(location="begin"), config=GenerateConfig(max_tokens=4))
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged files keep their mtime
        path.write_text(text)


# ----------------------------------------------------------------------------- Hugging Face format copy

#: llama2's [INST] ... [/INST] turns for transformers' tokenizer, which adds <s> itself (so the template does not).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)


def build_hf_checkpoint(checkpoint_file: Path, tokenizer_file: Path, dest: Path, *, vocab_size: int,
                        dims: dict[str, int]) -> Path:
    """Write the tiny llama2 in Hugging Face format: safetensors, config.json and tokenizer files.

    ``FullModelHFCheckpointer`` (``model_type: LLAMA2``, ``checkpoint_files:
    [model.safetensors]``) trains from it, and copies the other files into every
    epoch folder it saves, so each epoch folder loads with transformers (and
    inspect-ai's ``hf/`` provider) on its own. ``dims`` are the llama2 builder's
    arguments (``MODEL_DIMS`` of ``demo.assets``).

    >>> from torchtune_config_writer.demo.assets import MODEL_DIMS, VOCAB_SIZE        # doctest: +SKIP
    >>> build_hf_checkpoint(a.checkpoint_dir / a.checkpoint_file, a.tokenizer, Path("/tmp/hf"),
    ...                     vocab_size=VOCAB_SIZE, dims=MODEL_DIMS)                     # doctest: +SKIP
    PosixPath('/tmp/hf')
    """
    import logging
    import shutil

    import torch

    logging.getLogger("torchao").setLevel(logging.ERROR)  # its import-time warning is noise here
    from safetensors.torch import save_file
    from torchtune.models.convert_weights import tune_to_hf

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    hf_state = tune_to_hf(state, num_heads=dims["num_heads"], num_kv_heads=dims["num_kv_heads"],
                          dim=dims["embed_dim"])
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    _write(dest / "config.json", json.dumps(_hf_config(vocab_size, dims), indent=1) + "\n")
    shutil.copyfile(tokenizer_file, dest / "tokenizer.model")
    _write(dest / "tokenizer_config.json", json.dumps(_hf_tokenizer_config(dims["max_seq_len"]), indent=1) + "\n")
    _write(dest / "special_tokens_map.json",
           json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=1) + "\n")
    return dest


def _hf_config(vocab_size: int, dims: dict[str, int]) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": dims["embed_dim"],
        "intermediate_size": dims["intermediate_dim"],
        "num_hidden_layers": dims["num_layers"],
        "num_attention_heads": dims["num_heads"],
        "num_key_value_heads": dims["num_kv_heads"],
        "head_dim": dims["embed_dim"] // dims["num_heads"],
        "max_position_embeddings": dims["max_seq_len"],
        # torchtune's llama2 builder defaults: norm_eps 1e-5, rope base 10000, no biases, untied output.
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def _hf_tokenizer_config(max_len: int) -> dict[str, object]:
    return {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
