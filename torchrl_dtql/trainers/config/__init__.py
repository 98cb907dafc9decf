"""Hydra configuration files of the config-driven DTQL trainer (``pkg://torchrl_dtql.trainers.config``)."""
