"""The config-driven DTQL trainer's recipes, as Hydra YAML files (``pkg://torchrl_dtql.trainers.recipes``).

``dtql_offline.yaml``: the example's offline DTQL recipe (``examples/dtql_offline.py``, same key names) expressed in
TorchRL's trainer-config layout; run it with ``python -m torchrl_dtql.trainers``.
"""
