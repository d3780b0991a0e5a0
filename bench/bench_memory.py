"""Compare the memory estimate with torchtune's published peak memory figures (Appendix H).

torchtune's README ("Memory and training speed", torchtune 0.3-0.6) lists the
peak memory per GPU of Llama 3.1 fine-tunes, all "for batch size 2 (without
gradient accumulation), a dataset packed to sequence length 2048, and torch
compile enabled". Each row below is the shipped config with those settings
(and the row's own, where the README names them); the estimate is computed as
``generate`` computes it, without a GPU. It also times the meta-device builds.

    $ .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TORCHTUNE_CONFIG_WRITER_CACHE", "off")  # time the meta builds themselves

from torchtune_config_writer import generate_configs  # noqa: E402
from torchtune_config_writer.compile.memory import estimate_config  # noqa: E402

#: The README's settings for every row.
PUBLISHED_SETTINGS = {"batch_size": 2, "gradient_accumulation_steps": 1, "tokenizer.max_seq_len": 2048,
                      "dataset.packed": True, "compile": True}

#: (label, base config, GPUs, the row's own settings, published peak GiB)
ROWS = [
    ("Llama 3.1 8B full, 1x 4090", "llama3_1/8B_full_single_device", 1, {}, 18.9),
    ("Llama 3.1 8B full, 1x A6000", "llama3_1/8B_full_single_device", 1, {"enable_activation_checkpointing": False}, 37.4),
    ("Llama 3.1 8B LoRA, 1x 4090", "llama3_1/8B_lora_single_device", 1, {}, 16.2),
    ("Llama 3.1 8B LoRA, 1x A6000", "llama3_1/8B_lora_single_device", 1, {"enable_activation_checkpointing": False}, 30.3),
    ("Llama 3.1 8B QLoRA, 1x 4090", "llama3_1/8B_qlora_single_device", 1, {}, 7.4),
    ("Llama 3.1 70B full, 8x A100", "llama3_1/70B_full", 8, {"optimizer_in_bwd": True}, 13.9),
    ("Llama 3.1 70B LoRA, 8x A100", "llama3_1/70B_lora", 8, {}, 27.6),
    ("Llama 3.1 405B QLoRA, 8x A100", "llama3_1/405B_qlora", 8, {}, 44.8 * 1e9 / 2**30),  # published in GB
]


def main() -> int:
    lines = ["| config | settings beyond the README's | published peak (GiB) | estimate (GiB) | error | estimate without overhead | error |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, base, gpus, own, published in ROWS:
        exp = {"experiment_name": "bench", "base_config": base, "controls": {**PUBLISHED_SETTINGS, **own}}
        result = generate_configs(exp, output_dir="/tmp/bench_memory", write=False, validate=False, strict=False)
        start = time.perf_counter()
        est = estimate_config(result.runs[0].plain, result.recipe, gpus, result.distributed)
        took = time.perf_counter() - start
        bare = est.total_gib - est.breakdown["overhead"]
        settings = ", ".join(f"{k}={v}" for k, v in own.items()) or "-"
        lines.append(f"| {label} ({base}) | {settings} | {published:.1f} | {est.total_gib:.1f} | "
                     f"{(est.total_gib - published) / published:+.0%} | {bare:.1f} | {(bare - published) / published:+.0%} |")
        print(f"{label}: {est.summary()}  [{took:.2f} s]", file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
