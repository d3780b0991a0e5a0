"""The results side: an experiment directory's runs → results.csv, results.md and a loss plot.

    collect  the table per run and per variable, from status records and DiskLogger logs
    plots    the loss-per-step SVG

Reads the experiment directory only, through ``expdir``; never imports the compile side.
"""
