"""The execute side: experiment directory → runs (locally, or as SLURM job arrays) → their states.

    selection    --runs selections; may a run run (validated, unchanged)?
    runner       run one run, or many locally, recording status/ and logs/; evaluate each after it trains
    evaluation   may a run be evaluated; the evaluation program's command and report
    metadata     metadata.json in each run's output_dir
    tracking     the MLflow / W&B run each run logs to (created first, finished after)
    submit       submit runs as SLURM job arrays, recording slurm_jobs.yaml
    slurm_state  what squeue says of the tasks, merged with the status records

Reads the experiment directory only, through ``expdir``; never imports the compile side.
"""
