"""dtql_update_step against a plain-torch transcription of the reference training step (dtql_spec.md 2-3)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from torchrl.objectives import SoftUpdate

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers
from torchrl_dtql.objectives import update as update_module
from torchrl_dtql.objectives.update import cached_updater

from _dtql_common import make_batch

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]

OBS, ACT = 3, 2


class ReferenceDTQL:
    """The reference agent's step written out with plain tensors (``agents/dtql.py`` as the spec describes it)."""

    def __init__(self, modules, *, alpha, lr, critic_lr=3e-4, expectile=0.7, discount=0.99, tau=0.005):
        self.policy = copy.deepcopy(modules["actor_network"].module[0].module)  # GaussianPolicyNetwork
        self.denoiser = copy.deepcopy(modules["diffusion_network"].module.denoiser)
        self.q1 = copy.deepcopy(modules["qvalue_network"][0].module)
        self.q2 = copy.deepcopy(modules["qvalue_network"][1].module)
        self.v = copy.deepcopy(modules["value_network"].module)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        critic_params = [*self.q1.parameters(), *self.q2.parameters(), *self.v.parameters()]
        self.critic_opt = torch.optim.Adam(critic_params, lr=critic_lr)
        self.bc_opt = torch.optim.Adam(self.denoiser.parameters(), lr=lr)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.alpha, self.expectile, self.discount, self.tau = alpha, expectile, discount, tau

    def sigma(self, n):
        loc, scale = math.log(0.5), 0.5
        cdf = lambda x: 1 / (1 + math.exp(-(math.log(x) - loc) / scale))  # noqa: E731
        u = torch.rand(n, 1, dtype=torch.float64) * (cdf(80.0) - cdf(0.002)) + cdf(0.002)
        return (loc + scale * torch.log(u / (1 - u))).exp().float()

    def diffusion_loss(self, a, s):
        sigma = self.sigma(a.shape[0])
        noise = torch.randn_like(a)
        x = a + sigma * noise
        sd = 0.5
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        d = c_skip * x + c_out * self.denoiser(c_in * x, s, sigma.log() / 4)
        d = d.clamp(-1, 1)
        return (((d - a) / c_out) ** 2).mean()

    def train(self, batch, pretrain=False):
        s, a = batch["observation"], batch["action"]
        r, s2 = batch["next", "reward"], batch["next", "observation"]
        not_done = 1 - batch["next", "terminated"].float()

        def critic_step():
            q1, q2 = self.q1(s, a), self.q2(s, a)
            q_det = torch.min(q1, q2).detach()
            v = self.v(s)
            diff = q_det - v
            weight = torch.where(diff < 0, 1 - self.expectile, self.expectile)
            loss_v = (weight * diff**2).mean()
            y = r + not_done * self.discount * self.v(s2).detach()
            loss = loss_v + ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
            self.critic_opt.zero_grad()
            loss.backward()
            self.critic_opt.step()

        def bc_step():
            loss = self.diffusion_loss(a, s)
            self.bc_opt.zero_grad()
            loss.backward()
            self.bc_opt.step()

        if pretrain:
            bc_step()
            critic_step()
            return
        critic_step()
        bc_step()
        loc, std = self.policy(s)
        z = loc + std * torch.randn_like(loc)
        a_pi = torch.tanh(z).clamp(-1, 1)
        tr = self.diffusion_loss(a_pi, s)
        q = torch.min(self.q1(s, a_pi), self.q2(s, a_pi))
        loss = self.alpha * tr - q.mean()
        self.policy_opt.zero_grad()
        loss.backward()
        self.policy_opt.step()
        with torch.no_grad():
            for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.mul_(1 - self.tau).add_(self.tau * p)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_update_step_matches_reference_transcription(fast):
    torch.manual_seed(0)
    modules = make_dtql_modules(OBS, ACT, hidden_dim=32)
    reference = ReferenceDTQL(modules, alpha=2.0, lr=1e-3)
    loss = DTQLLoss(**modules, alpha=2.0)
    optimizers = make_dtql_optimizers(loss, lr=1e-3)
    updater = SoftUpdate(loss, tau=0.005)
    # the fast run really goes through the cached DTQLUpdater (no silent fallback to the plain path)
    if fast:
        assert cached_updater(loss, optimizers, updater) is not None
    batches = [make_batch(32, OBS, ACT, seed=i) for i in range(6)]
    for i, batch in enumerate(batches):
        pretrain = i < 2
        torch.manual_seed(100 + i)
        dtql_update_step(loss, optimizers, batch, pretrain=pretrain, target_updater=updater, fast=fast)
        torch.manual_seed(100 + i)
        reference.train(batch, pretrain=pretrain)

    # Two code paths (TorchRL modules and losses vs a plain-torch transcription; fast: fused backward passes, the
    # exp-based Mish) round float32 differently, and Adam's m / sqrt(v) turns tiny gradient differences into
    # parameter differences up to lr-sized over 6 steps: rtol 1e-4 / atol 1e-5 (lr is 1e-3).
    def close(ours, theirs: nn.Module):
        for (name, p), q in zip(ours.items(), theirs.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)

    actor_params = loss.actor_network_params["module", "0", "module"].flatten_keys()
    close(dict(actor_params.items()), reference.policy)
    denoiser_params = loss.diffusion_network_params["module", "denoiser"].flatten_keys().exclude("time_embedding.freqs")
    ours = dict(denoiser_params.items())
    theirs = dict(reference.denoiser.named_parameters())
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for i, (net, target) in enumerate(((reference.q1, reference.q1_target), (reference.q2, reference.q2_target))):
        online = loss.qvalue_network_params[i]["module"].flatten_keys()
        targ = loss.target_qvalue_network_params[i]["module"].flatten_keys()
        for name, value in net.named_parameters():
            torch.testing.assert_close(online[name], value, rtol=1e-4, atol=1e-5, msg=name)
        for name, value in target.named_parameters():
            torch.testing.assert_close(targ[name], value, rtol=1e-4, atol=1e-5, msg=name)
    v = loss.value_network_params["module"].flatten_keys()
    for name, value in reference.v.named_parameters():
        torch.testing.assert_close(v[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_pretrain_leaves_actor_and_targets_alone():
    torch.manual_seed(0)
    loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
    optimizers = make_dtql_optimizers(loss)
    updater = SoftUpdate(loss, tau=0.5)
    actor_before = loss.actor_network_params.clone()
    target_before = loss.target_qvalue_network_params.clone()
    q_before = loss.qvalue_network_params.clone()
    out = dtql_update_step(loss, optimizers, make_batch(), pretrain=True, target_updater=updater)
    assert "loss_actor" not in out.keys()
    assert (loss.actor_network_params == actor_before).all()
    assert (loss.target_qvalue_network_params == target_before).all()
    assert not (loss.qvalue_network_params == q_before).all()


def test_update_returns_detached_losses():
    loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
    out = dtql_update_step(loss, make_dtql_optimizers(loss), make_batch())
    assert {"loss_actor", "loss_qvalue", "loss_value", "loss_diffusion", "trust_region"} <= set(out.keys())
    assert not any(v.requires_grad for v in out.values())


def test_optimizer_learning_rates_and_state_dict():
    loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
    optimizers = make_dtql_optimizers(loss, lr=1e-4, diffusion_lr=2e-4)
    assert optimizers.actor.param_groups[0]["lr"] == 1e-4
    assert optimizers.diffusion.param_groups[0]["lr"] == 2e-4
    assert optimizers.critic.param_groups[0]["lr"] == 3e-4
    n_critic = len(optimizers.critic.param_groups[0]["params"])
    assert n_critic == len(list(loss.qvalue_network_params.values(True, True))) + len(
        [p for p in loss.value_network_params.values(True, True) if p.requires_grad]
    )
    dtql_update_step(loss, optimizers, make_batch())
    state = optimizers.state_dict()
    fresh = make_dtql_optimizers(loss, lr=1e-4)
    fresh.load_state_dict(state)
    assert fresh.actor.state_dict()["state"].keys() == optimizers.actor.state_dict()["state"].keys()


def test_reduction_none_rejected():
    loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0, reduction="none")
    with pytest.raises(ValueError, match="scalar"):
        dtql_update_step(loss, make_dtql_optimizers(loss), make_batch())


class TestDefaultPathCache:
    """dtql_update_step's fast path: one cached updater per (loss, optimizers, target updater), plain path fallback."""

    def test_one_updater_reused_and_rebuilt_for_new_optimizers(self):
        loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
        optimizers = make_dtql_optimizers(loss)
        first = cached_updater(loss, optimizers)
        assert first is not None and cached_updater(loss, optimizers) is first
        replaced = make_dtql_optimizers(loss)
        second = cached_updater(loss, replaced)
        assert second is not first and second.optimizers is replaced
        assert cached_updater(loss, replaced, SoftUpdate(loss, tau=0.1)) is not second

    def test_deepcopy_drops_the_cache_and_trains_its_own_parameters(self):
        loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
        dtql_update_step(loss, make_dtql_optimizers(loss), make_batch())
        clone = copy.deepcopy(loss)
        assert clone not in update_module._UPDATERS  # the cache lives in objectives/update.py, not on the loss
        before = loss.actor_network_params.clone()
        dtql_update_step(clone, make_dtql_optimizers(clone), make_batch())
        assert (loss.actor_network_params == before).all()  # the original loss is untouched
        assert not (clone.actor_network_params == before).all()

    def test_subclass_overriding_a_loss_takes_the_plain_path(self):
        calls = []

        class LoggedDTQLLoss(DTQLLoss):
            def actor_loss(self, tensordict):
                calls.append(1)
                return super().actor_loss(tensordict)

        loss = LoggedDTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
        optimizers = make_dtql_optimizers(loss)
        assert cached_updater(loss, optimizers) is None
        dtql_update_step(loss, optimizers, make_batch())
        assert calls == [1]

    def test_fast_path_checks_every_batch(self):
        loss = DTQLLoss(**make_dtql_modules(OBS, ACT, hidden_dim=16), alpha=1.0)
        optimizers = make_dtql_optimizers(loss)
        dtql_update_step(loss, optimizers, make_batch())
        bad = make_batch()
        bad["next", "reward"][3] = float("nan")
        with pytest.raises(ValueError, match="non-finite"):
            dtql_update_step(loss, optimizers, bad)
