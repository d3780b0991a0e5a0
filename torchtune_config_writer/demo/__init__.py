"""The demo: a tiny llama-style model, tokenizer and data set built offline, so everything runs on a CPU.

    assets  build them (``python -m torchtune_config_writer.demo.assets DEST``)
    tiny/   the example base config and experiment the demo (and the tests) use
"""
