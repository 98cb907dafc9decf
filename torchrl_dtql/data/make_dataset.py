"""``python -m torchrl_dtql.data.make_dataset`` and ``dtql-make-dataset``: the dataset maker's command line.

The maker lives in :mod:`torchrl_dtql.data.maker` (see :mod:`torchrl_dtql.data.maker.cli` for what it does); this
module keeps the command and the names importable from here.

Examples:
    >>> args = parse_args(["--env", "Hopper-v5", "--kinds", "medium"])
    >>> dataset_id_for(args.env, args.kinds[0])
    'local/hopper/medium-v0'
"""
from __future__ import annotations

from .maker.cli import KINDS, dataset_id_for, main, parse_args, select_policies

__all__ = ["KINDS", "main", "parse_args", "dataset_id_for", "select_policies"]

if __name__ == "__main__":  # pragma: no cover
    main()
