"""DTQL's acting policies: Q-reranking, the acting modes by name, and the exportable plain-torch policy.

The networks these policies run live in :mod:`torchrl_dtql.modules`; this package puts them together for acting,
reading a trained :class:`~torchrl_dtql.DTQLLoss`'s parameters by reference (it never builds or trains a loss).

* :func:`rerank` / :func:`repeat_for_candidates`: the one implementation of Q-reranking, on plain tensors;
* :class:`QRerankingActor`: the paper's evaluation policy as a TensorDict module (``from_loss``);
* :class:`FunctionalPolicy`: a loss's network called with the loss's parameters, under a fixed exploration type;
* :data:`ACTING_MODES`, :func:`make_acting_policy`, :func:`make_acting_policies`: the policies by mode name;
* :class:`ExportablePolicy`, :func:`make_exportable_policy`: the same acting in plain torch, for
  :mod:`torchrl_dtql.export`.

Examples:
    >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
    >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
    >>> sorted(make_acting_policies(loss, ACTING_MODES, num_candidates=8))
    ['diffusion_bc', 'mean', 'reranked']
"""
from __future__ import annotations

from torchrl_dtql.policies.acting_modes import (
    ACTING_MODES,
    make_acting_policies,
    make_acting_policy,
    UnknownActingModeError,
)
from torchrl_dtql.policies.exportable import ExportablePolicy, make_exportable_policy
from torchrl_dtql.policies.functional import FunctionalPolicy
from torchrl_dtql.policies.reranking import repeat_for_candidates, rerank
from torchrl_dtql.policies.reranking_actor import QRerankingActor

__all__ = [
    "ACTING_MODES",
    "ExportablePolicy",
    "FunctionalPolicy",
    "QRerankingActor",
    "UnknownActingModeError",
    "make_acting_policies",
    "make_acting_policy",
    "make_exportable_policy",
    "repeat_for_candidates",
    "rerank",
]
