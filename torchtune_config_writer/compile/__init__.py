"""The compile side: experiment.yaml → a validated experiment directory.

Stages, in the order data flows through them:

    schema      experiment.yaml → ``Experiment`` (pydantic), errors with file:line
    registry    torchtune's recipes and shipped configs, read without importing torchtune
    loaders     the base config as a round-trip tree (comments kept) and its recipe
    keys        what the experiment's keys mean in the base (short names, aliases, +add, ~delete)
    components  import a ``_component_``, the arguments it accepts (sigcache keeps the answers)
    merge       one override applied to a tree
    sweep       the variables' combinations, numbered runs
    render      each run's YAML text and plain dict
    validate    every config checked in one process
    sbatch      the submit script and the SLURM settings the execute side needs
    writer      the experiment directory, atomically (expdir.RunMapping)
    compiler    ``generate_configs``: all of the above in order

Importing this package imports nothing heavy; torchtune loads only when a
component must be inspected.
"""
