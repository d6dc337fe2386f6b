"""GPU memory before the run: a model's shape, the estimate formula, and the settings that fit.

    shapes.py    a model's shape from a config, a GGUF file or the known table (no download)
    vision_shapes.py  a vision-language model's tower and projector, what an image costs, their bytes
    formula.py   estimate(): the terms of a training step's peak, documented formula by formula
    fit.py       check_fits, auto_fit, gpus_needed, fit_report (what `studio estimate` prints)
    gpus.py      GPU sizes by name, the default GPU, the visible GPU's free memory

Formatting for people lives in the shells (studio.cli.format, studio.ui.tabs.recipe), not here. Nothing
is imported here, so `studio --help` can read the GPU table without the estimator.
"""
