"""The results side: an experiment directory's runs → results.csv, results.md and plots.

    collect  the table per run and per variable, from status records, DiskLogger logs and evaluation results
    metrics  which metric ranks the runs (the primary metric) and in which direction
    plots    the loss-per-step SVG and the primary metric against each variable
    tracked  the training metrics of runs tracked in MLflow, read back through its client

Reads the experiment directory only, through ``expdir``; never imports the compile side.
"""
