"""Tiny offline assets that let real torchtune trainings run on a CPU in seconds.

``build_tiny_assets(dest)`` writes, without any download:

- ``tokenizer.model``: a SentencePiece BPE model (512 pieces, byte fallback)
  trained on generated text; loads with ``torchtune.models.llama2.llama2_tokenizer``;
- ``checkpoint/model.pt``: a random-init 2-layer llama2 (~150k parameters) state
  dict for ``FullModelTorchTuneCheckpointer`` (``model_type: LLAMA2``); the same
  weights are the base of ``lora_llama2`` with the same dimensions;
- ``data/alpaca_tiny.json``: a few hundred short alpaca-style records;
- ``data/count_*.json``, ``tasks/`` and ``evals/``: the counting task the demo is evaluated on
  (``evaltask.py``);
- ``tiny_lora_cpu.yaml``, ``experiment.yaml`` and ``count_study.yaml``: copies of
  ``torchtune_config_writer/demo/tiny/`` (linked from ``example_configs/tiny/``) with the placeholder ``__TINY_ASSETS__`` replaced
  by the absolute path of ``dest``, so generated configs work from any cwd.

Building is deterministic and idempotent: a marker file records a finished
build, and a second call only refreshes the two YAML copies (when they differ).

    >>> assets = build_tiny_assets(Path("/tmp/tiny"))          # doctest: +SKIP
    >>> assets.experiment.name                                  # doctest: +SKIP
    'experiment.yaml'

Also a command: ``python -m torchtune_config_writer.demo.assets DEST``.
"""

from __future__ import annotations

import io
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigWriterError
from .evaltask import build_eval_task

#: The placeholder in tiny/*.yaml replaced by the absolute assets directory.
PLACEHOLDER = "__TINY_ASSETS__"

#: Model dimensions shared by the base model and its LoRA variant (and by tiny_lora_cpu.yaml).
MODEL_DIMS = dict(num_layers=2, num_heads=4, num_kv_heads=4, embed_dim=64, intermediate_dim=128, max_seq_len=256)
VOCAB_SIZE = 512
NUM_RECORDS = 400
SEED = 0

# Bump when what is built changes, so that older builds are rebuilt instead of reused.
_BUILD_VERSION = 1
_MARKER = ".tiny_assets_built.json"

#: The example shipped with the package (example_configs/tiny/ links to it): the base config and its sweep.
EXAMPLE_DIR = Path(__file__).resolve().parent / "tiny"
_EXAMPLE_FILES = ("tiny_lora_cpu.yaml", "experiment.yaml", "count_study.yaml")


@dataclass(frozen=True)
class TinyAssets:
    """Absolute paths of a built set of tiny assets."""

    root: Path
    tokenizer: Path
    checkpoint_dir: Path
    checkpoint_file: str
    data_file: Path
    base_config: Path
    """tiny_lora_cpu.yaml with absolute paths into ``root``."""
    experiment: Path
    """The 8-run example experiment, next to ``base_config`` (which it names relatively)."""
    count_study: Path
    """The demo's evaluated study: the counting task (``evaltask.py``), scored after each run trains."""


def assets_paths(dest: Path) -> TinyAssets:
    """Where ``build_tiny_assets(dest)`` puts each file (nothing is built)."""
    root = Path(dest).expanduser().resolve()
    return TinyAssets(
        root=root,
        tokenizer=root / "tokenizer.model",
        # Only the weights in here: torchtune copies other files of checkpoint_dir into every epoch dir.
        checkpoint_dir=root / "checkpoint",
        checkpoint_file="model.pt",
        data_file=root / "data" / "alpaca_tiny.json",
        base_config=root / "tiny_lora_cpu.yaml",
        experiment=root / "experiment.yaml",
        count_study=root / "count_study.yaml",
    )


def build_tiny_assets(dest: Path, example_dir: Path | None = None) -> TinyAssets:
    """Build (or reuse) the tiny tokenizer, model, dataset and example configs under ``dest``.

    ``example_dir`` holds the committed ``tiny_lora_cpu.yaml`` and ``experiment.yaml``
    (default: the copy shipped inside the package).

    >>> a = build_tiny_assets(Path("/tmp/tiny"))   # doctest: +SKIP
    >>> a.tokenizer.exists(), a.checkpoint_dir.joinpath(a.checkpoint_file).exists()   # doctest: +SKIP
    (True, True)
    """
    example = _check_example(Path(example_dir) if example_dir else EXAMPLE_DIR)  # fail before the slow part
    assets = assets_paths(dest)
    assets.root.mkdir(parents=True, exist_ok=True)
    marker = assets.root / _MARKER
    if not _is_built(marker):
        _write_dataset(assets.data_file)
        vocab = _train_tokenizer(assets.tokenizer)
        _write_model(assets.checkpoint_dir / assets.checkpoint_file, vocab)
        # The marker goes last: an interrupted build is redone, never half-reused.
        marker.write_text(json.dumps({"version": _BUILD_VERSION, "vocab_size": vocab}) + "\n")
    build_eval_task(assets.root)  # deterministic and cheap: files already equal are not rewritten
    _materialize_configs(assets, example)
    return assets


def _is_built(marker: Path) -> bool:
    try:
        return json.loads(marker.read_text()).get("version") == _BUILD_VERSION
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- data

_SUBJECTS = ["the cat", "a robot", "my friend", "the teacher", "our team", "a small bird", "the river", "this model"]
_VERBS = ["likes", "sees", "builds", "finds", "moves", "reads", "paints", "counts"]
_OBJECTS = ["red apples", "tall trees", "old books", "bright stars", "quiet rooms", "blue boxes", "fast trains", "warm bread"]
_PLACES = ["in the morning", "near the sea", "at night", "in the garden", "after lunch", "on the hill"]


def _sentence(rng: random.Random) -> str:
    s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    return s + (f" {rng.choice(_PLACES)}" if rng.random() < 0.5 else "")


def _records(n: int, seed: int) -> list[dict[str, str]]:
    """Short, learnable instruction records (reverse, count, repeat) in alpaca format."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentence = _sentence(rng)
        words = sentence.split()
        task = rng.randrange(3)
        if task == 0:
            rec = {"instruction": "Reverse the order of the words.", "input": sentence, "output": " ".join(reversed(words))}
        elif task == 1:
            rec = {"instruction": "How many words are in the sentence?", "input": sentence, "output": str(len(words))}
        else:
            rec = {"instruction": f"Write a sentence about {words[-1]}.", "input": "", "output": sentence.capitalize() + "."}
        out.append(rec)
    return out


def _write_dataset(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_records(NUM_RECORDS, SEED), indent=1) + "\n")


# ----------------------------------------------------------------------------- tokenizer


def _train_tokenizer(path: Path) -> int:
    """Train the SentencePiece model; return its vocabulary size."""
    import sentencepiece as spm

    rng = random.Random(SEED + 1)
    # The prompt words of torchtune's alpaca template are in the corpus so that they get real pieces.
    template = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    lines = [template, "### Instruction:", "### Input:", "### Response:"] * 20
    for rec in _records(NUM_RECORDS, SEED):
        lines += [rec["instruction"], rec["input"], rec["output"]]
    lines += [_sentence(rng) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in lines if line]),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,  # any text encodes, even characters never seen in training
        character_coverage=1.0,
        # llama2 ids: unk 0, bos 1, eos 2, no pad (the SentencePiece defaults, spelled out).
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=2,
        minloglevel=2,  # training is chatty on stderr
    )
    path.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()


# ----------------------------------------------------------------------------- model


def _write_model(path: Path, vocab_size: int) -> None:
    """Save a random-init llama2 state dict (fixed seed) in torchtune's own format."""
    import torch

    from ..compile.components import import_torchtune

    import_torchtune()
    from torchtune.models.llama2 import llama2

    torch.manual_seed(SEED)
    model = llama2(vocab_size=vocab_size, **MODEL_DIMS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)


# ----------------------------------------------------------------------------- configs


def _check_example(example_dir: Path) -> Path:
    missing = [n for n in _EXAMPLE_FILES if not (example_dir / n).is_file()]
    if missing:
        raise ConfigWriterError(
            f"the tiny example ({', '.join(missing)}) is not in {example_dir}; reinstall the package "
            "(it ships torchtune_config_writer/demo/tiny/), or pass example_dir= pointing at a copy of it"
        )
    return example_dir


def _materialize_configs(assets: TinyAssets, example_dir: Path) -> None:
    """Copy the example YAML files into the assets dir, the placeholder made absolute."""
    # A YAML double-quoted string accepts JSON escapes, so any path survives quoting.
    root = json.dumps(str(assets.root))[1:-1]
    for name in _EXAMPLE_FILES:
        text = (example_dir / name).read_text().replace(PLACEHOLDER, root)
        target = assets.root / name
        if not target.exists() or target.read_text() != text:  # unchanged files keep their mtime
            target.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """``python -m torchtune_config_writer.demo.assets DEST``: build and print the paths."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m torchtune_config_writer.demo.assets DEST", file=sys.stderr)
        return 2
    assets = build_tiny_assets(Path(args[0]))
    for field, value in vars(assets).items():
        print(f"{field}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
