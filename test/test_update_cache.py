"""dtql_update_step's cache of fast updaters (objectives/update.py): kept off the loss, never keeping it alive, and
rebuilt by the rules of ``cached_updater``'s docstring."""
from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from torchrl.objectives import SoftUpdate
from torchrl.objectives.utils import ValueEstimators

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers
from torchrl_dtql.objectives import update
from torchrl_dtql.objectives.fast_update import DTQLUpdater
from torchrl_dtql.objectives.update import cached_updater

from _dtql_common import ACTION_DIM, make_batch, OBS_DIM

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]


def _loss(**kwargs) -> DTQLLoss:
    torch.manual_seed(0)
    return DTQLLoss(**make_dtql_modules(OBS_DIM, ACTION_DIM, hidden_dim=16), alpha=1.0, **kwargs)


def _holds_an_updater(value: object) -> bool:
    if isinstance(value, DTQLUpdater):
        return True
    if isinstance(value, dict):
        return any(_holds_an_updater(v) for v in value.values())
    return False


def test_the_cache_is_not_stored_on_the_loss():
    loss = _loss()
    dtql_update_step(loss, make_dtql_optimizers(loss), make_batch())
    assert cached_updater(loss, make_dtql_optimizers(loss)) is not None
    assert not any(_holds_an_updater(value) for value in vars(loss).values())
    assert loss in update._UPDATERS


def test_the_cache_does_not_keep_the_loss_alive():
    loss = _loss()
    optimizers, target_updater = make_dtql_optimizers(loss), SoftUpdate(loss, tau=0.1)
    dtql_update_step(loss, optimizers, make_batch(), target_updater=target_updater)
    assert cached_updater(loss, optimizers, target_updater) is not None
    alive = weakref.ref(loss)
    entries = len(update._UPDATERS)
    del loss, optimizers, target_updater
    gc.collect()
    assert alive() is None, "the cached updater keeps the loss alive"
    # its entry went with it (losses of earlier tests may be collected by the same gc.collect(), hence <=)
    assert len(update._UPDATERS) <= entries - 1


def test_a_collected_target_updater_is_never_stepped():
    """An updater built for a target updater that is gone is rebuilt, not called with a dead reference."""
    loss = _loss()
    optimizers = make_dtql_optimizers(loss)
    target_updater = SoftUpdate(loss, tau=0.1)
    first = cached_updater(loss, optimizers, target_updater)
    del target_updater
    gc.collect()
    second = cached_updater(loss, optimizers)
    assert second is not first and second.target_updater is None
    dtql_update_step(loss, optimizers, make_batch())


def test_deepcopy_carries_no_cache():
    loss = _loss()
    dtql_update_step(loss, make_dtql_optimizers(loss), make_batch())
    clone = copy.deepcopy(loss)
    assert clone not in update._UPDATERS
    assert not any(_holds_an_updater(value) for value in vars(clone).values())


class TestRebuildRules:
    def test_a_new_value_estimator_rebuilds_and_its_discount_is_used(self):
        loss, plain_loss = _loss(), _loss()
        optimizers, plain_optimizers = make_dtql_optimizers(loss), make_dtql_optimizers(plain_loss)
        first = cached_updater(loss, optimizers)
        for lossmodule in (loss, plain_loss):
            lossmodule.make_value_estimator(gamma=0.5)
        assert cached_updater(loss, optimizers) is not first
        batch = make_batch()
        torch.manual_seed(1)
        got = dtql_update_step(loss, optimizers, batch)
        torch.manual_seed(1)
        expected = dtql_update_step(plain_loss, plain_optimizers, batch, fast=False)
        # fast vs plain path, float32 rounding of one step (see test_fast_update.py)
        torch.testing.assert_close(got["loss_qvalue"], expected["loss_qvalue"], rtol=1e-5, atol=1e-6)

    def test_new_keys_or_reduction_rebuild(self):
        loss = _loss()
        optimizers = make_dtql_optimizers(loss)
        first = cached_updater(loss, optimizers)
        loss.set_keys(reward="rew")
        second = cached_updater(loss, optimizers)
        assert second is not first
        loss.reduction = "sum"
        assert cached_updater(loss, optimizers) is not second

    def test_the_same_optimizers_in_a_new_tuple_reuse_the_updater(self):
        """KLDistillOptimizers.dtql() makes a new tuple every step: the optimizers, not the tuple, are the key."""
        loss = _loss()
        optimizers = make_dtql_optimizers(loss)
        first = cached_updater(loss, optimizers)
        assert cached_updater(loss, type(optimizers)(*optimizers)) is first

    def test_the_plain_path_is_cached_too(self):
        loss = _loss()
        optimizers = make_dtql_optimizers(loss)
        loss.make_value_estimator(ValueEstimators.TD1)
        assert cached_updater(loss, optimizers) is None
        assert update._UPDATERS[loss].updater is None
        loss.make_value_estimator(ValueEstimators.TD0)
        assert cached_updater(loss, optimizers) is not None
