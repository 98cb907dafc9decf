"""Making datasets, apart from loading them: train a behaviour agent, record its episodes, write Minari datasets.

* :mod:`.cli`: the command line, ``python -m torchrl_dtql.data.make_dataset`` / ``dtql-make-dataset`` (D4RL's
  recipe: SAC, then ``random``/``medium``/``medium-replay``/``expert``/``medium-expert`` datasets);
* :mod:`.recording`: roll a policy out in a gymnasium env and write the episodes as a Minari dataset, atomically;
* :mod:`.behaviour_actor`: the behaviour policy and its small file format (the embedded dataset ships one);
* :mod:`.sac`: the SAC behaviour agent, TorchRL's own SAC, resumable.

This ``__init__`` imports nothing, on purpose: the loaders import :mod:`.recording` to regenerate the embedded
dataset, and importing it must not pull in the command line (and, through it, the SAC trainer).

Examples:
    >>> from torchrl_dtql.data.maker.cli import dataset_id_for
    >>> dataset_id_for("Hopper-v5", "medium")
    'local/hopper/medium-v0'
"""
