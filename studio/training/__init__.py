"""Training: one run from a recipe to a run directory, for every method.

    train.py         train(): the run top to bottom (run directory, seed, model, data, trainer, adapter)
    prepare.py       before loading: fit to the GPU, check inputs, create the run directory
    sft.py           supervised fine-tuning (trl's SFTTrainer on the studio's loss-masked tokens)
    preference.py    DPO and ORPO on prompt/chosen/rejected pairs
    grpo.py          GRPO: sampled completions scored by verifiable rewards (R1-style RL)
    grpo_data.py     GRPO's prompt rows and reward checks, before any model loads (torch-free)
    rewards/         the reward registry: shipped verifiable rewards, reward files, the guard trl calls
    arguments.py     the Trainer arguments and dtype rules every method shares
    callbacks.py     every callback: metrics, progress, Ctrl-C, checkpoint manifests, rank agreement
    distributed.py   several processes: the accelerate config, the launcher, FSDP over gloo, gathers
    rundir.py        the run directory: every file name, atomic writes, metrics
    checkpoints.py   checkpoint manifests and the last intact checkpoint
    model_card.py    the run's README.md
    reproduce.py     `studio reproduce`: train again from the run directory and compare

A new method is a new file here and one line in `train.method_trainer`.
"""
