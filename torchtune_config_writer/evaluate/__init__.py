"""The evaluation program: held-out loss, lm-eval and inspect-ai on a run's checkpoints.

Run as a child process, one per run, in the experiment directory:

    python -m torchtune_config_writer.evaluate --report eval/run_000/report.json \\
        eval/run_000/epoch_0.heldout.yaml eval/run_000/epoch_0.lm_eval.yaml

Each config (torchtune-style YAML; Appendix B) names its ``evaluator`` and the
``result_file`` where an ``expdir.EvalResult`` is written:

- ``heldout`` (``heldout.py``): the run's loss over a held-out dataset, counted
  as the training recipes count it -> ``heldout_loss``;
- ``lm_eval`` (``harness.py``): lm-evaluation-harness tasks through torchtune's
  own adapter -> ``<task>/<metric>``;
- ``inspect`` (``inspect_eval.py``): inspect-ai tasks on the Hugging Face format
  weights -> ``<task>/<metric>``.

torch, torchtune, lm-eval and inspect-ai are imported only when a config needs
them, once per process; a model loaded for one config is reused by the next
config on the same checkpoint (``loading.py``). This package reads the
experiment directory contract (``expdir``) and never the compile or execute side.

    >>> from torchtune_config_writer.evaluate import run_configs
    >>> run_configs([Path("eval/run_000/epoch_0.heldout.yaml")])       # doctest: +SKIP
    0
"""

from .program import main, run_configs

__all__ = ["main", "run_configs"]
