"""The fast update path and the fast reranking actor against the plain eager paths they replace.

``DTQLUpdater`` must train the same parameters as ``dtql_update_step`` (itself checked against a transcription of
the reference step in test_update.py) from the same seed, in both phases, and consume the same random numbers;
``QRerankingActor`` must pick the same actions as the reference's selection (the policy run on N copies of each
state) for the same RNG state.
"""
from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.objectives import SoftUpdate

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers, QRerankingActor
from torchrl_dtql.modules.bound_networks import ensemble_values
from torchrl_dtql.modules.fast_mish import ExpMish, mish_via_exp, replace_mish_
from torchrl_dtql.modules.inductor import make_inductor_backend
from torchrl_dtql.objectives.fast_update import DTQLUpdater, make_dtql_update_fn
from torchrl_dtql.objectives.update import DTQLOptimizers

from _dtql_common import ACTION_DIM, assert_same_reranked_pick, make_batch, OBS_DIM, reference_rerank

pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.filterwarnings("ignore:No target network updater"),
    # compiled tests: importing inductor makes torch warn about its own use of torch.jit, and dynamo warns when it
    # traces torchrl's safe-tanh autograd.Function
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]

PRETRAIN_STEPS, MAIN_STEPS = 2, 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: a second thread only adds synchronisation, and stalls for whole time slices when the cores are
    shared with other jobs (a 16-sample step then takes 0.2 s instead of 5 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss(seed: int = 0, **kwargs) -> DTQLLoss:
    torch.manual_seed(seed)
    kwargs.setdefault("alpha", 2.0)
    return DTQLLoss(**make_dtql_modules(OBS_DIM, ACTION_DIM, hidden_dim=32), **kwargs)


def _sgd(loss: DTQLLoss, lr: float = 0.05) -> DTQLOptimizers:
    """SGD keeps weight differences proportional to gradient differences (Adam can amplify rounding near 0)."""

    def params(name):
        return [p for p in getattr(loss, name).values(True, True) if p.requires_grad]

    return DTQLOptimizers(
        critic=torch.optim.SGD(params("qvalue_network_params") + params("value_network_params"), lr=lr),
        diffusion=torch.optim.SGD(params("diffusion_network_params"), lr=lr),
        actor=torch.optim.SGD(params("actor_network_params"), lr=lr),
        alpha=torch.optim.SGD([loss.log_alpha], lr=lr) if loss.learns_log_alpha else None,
    )


def _weights(loss: DTQLLoss) -> dict:
    return {k: v.detach().clone() for k, v in loss.state_dict().items()}


def _run_both(fast_kwargs: dict, *, optimizers=_sgd, fast_optimizers=None, loss_kwargs=None, batch_size=16):
    """The same seeded steps through dtql_update_step and a DTQLUpdater; returns both losses and their outputs."""
    loss_kwargs = loss_kwargs or {}
    reference_loss, fast_loss = _loss(**loss_kwargs), _loss(**loss_kwargs)
    reference_opt = optimizers(reference_loss)
    fast_opt = (fast_optimizers or optimizers)(fast_loss)
    reference_target, fast_target = SoftUpdate(reference_loss, tau=0.1), SoftUpdate(fast_loss, tau=0.1)
    update = DTQLUpdater(fast_loss, fast_opt, target_updater=fast_target, **fast_kwargs)
    outputs = []
    for i in range(PRETRAIN_STEPS + MAIN_STEPS):
        batch = make_batch(batch_size, seed=i)
        pretrain = i < PRETRAIN_STEPS
        torch.manual_seed(100 + i)
        expected = dtql_update_step(reference_loss, reference_opt, batch.clone(), pretrain=pretrain, fast=False,
                                    target_updater=reference_target)  # fmt: skip
        expected_next_draw = torch.rand(3)
        torch.manual_seed(100 + i)
        got = update(batch.clone(), pretrain=pretrain)
        outputs.append((expected, got, expected_next_draw, torch.rand(3)))
    return reference_loss, fast_loss, outputs


class TestDTQLUpdater:
    @pytest.mark.parametrize(
        "alpha_kwargs",
        [{"alpha": 2.0}, {"alpha": "auto", "auto_alpha": "multiplier"}, {"alpha": "auto", "auto_alpha": "q_scale"}],
        ids=["fixed", "multiplier", "q_scale"],
    )
    def test_same_parameters_and_losses_as_dtql_update_step(self, alpha_kwargs):
        reference_loss, fast_loss, outputs = _run_both({}, loss_kwargs=alpha_kwargs)
        # Two code paths for the same float32 math (one fused critic + diffusion backward, one twin-Q forward less,
        # the exp-based Mish vs ATen's): they round differently. Measured here after 5 SGD steps: outputs within
        # 4e-7 absolute, weights within 1.2e-7; rtol 1e-5 / atol 1e-6 leaves ~10x for other CPUs' kernels.
        for expected, got, expected_draw, got_draw in outputs:
            assert set(got.keys()) == set(expected.keys())
            for key in expected.keys():
                torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
            # the same random numbers were consumed, in the same amount: the next draws of the one global generator
            # must be bit-identical (exact on purpose: this compares random streams, not float arithmetic)
            torch.testing.assert_close(got_draw, expected_draw, rtol=0, atol=0)
        expected_w, got_w = _weights(reference_loss), _weights(fast_loss)
        changed = [k for k in expected_w if not torch.equal(expected_w[k], _weights(_loss(**alpha_kwargs))[k])]
        if alpha_kwargs.get("auto_alpha") == "multiplier":  # it moved, identically on both paths (the loop below)
            assert "log_alpha" in changed and "alpha" in changed
        if alpha_kwargs.get("auto_alpha") == "q_scale":  # set from the batch, identically on both paths
            assert "alpha" in changed
        assert any("actor" in k for k in changed) and any("diffusion" in k for k in changed)
        assert any("target_qvalue" in k for k in changed)
        for key in expected_w:
            torch.testing.assert_close(got_w[key], expected_w[key], rtol=1e-5, atol=1e-6, msg=key)

    def test_pretrain_moves_critic_and_diffusion_only(self):
        loss = _loss()
        update = DTQLUpdater(loss, _sgd(loss), target_updater=SoftUpdate(loss, tau=0.1))
        before = _weights(loss)
        out = update(make_batch(16), pretrain=True)
        assert sorted(out.keys()) == ["loss_diffusion", "loss_qvalue", "loss_value", "pred_value"]
        after = _weights(loss)
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert any(k.startswith("qvalue_network_params") for k in moved)
        assert any(k.startswith("value_network_params") for k in moved)
        assert any(k.startswith("diffusion_network_params") for k in moved)
        assert not any(k.startswith(("actor_network_params", "target_qvalue")) for k in moved)

    def test_fused_adam_matches_default_adam(self):
        _, _, outputs = _run_both({}, optimizers=make_dtql_optimizers,
                                  fast_optimizers=lambda loss: make_dtql_optimizers(loss, fused=True))  # fmt: skip
        # fused Adam (one multi-tensor kernel) vs the for-loop Adam, on top of the fast path's rounding: Adam's
        # m / sqrt(v) normalises tiny gradient differences up to unit-size steps, hence 10x the SGD tolerance
        # (measured here: 5e-7 absolute on the losses)
        for expected, got, _, _ in outputs:
            for key in expected.keys():
                torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)

    def test_nll_term_and_sum_reduction(self):
        small_steps = lambda loss: _sgd(loss, lr=0.002)  # noqa: E731  (summed losses are 16x larger)
        reference_loss, fast_loss, outputs = _run_both(
            {}, optimizers=small_steps, loss_kwargs={"gamma_nll": 0.5, "reduction": "sum"}
        )
        # the fast path's float32 rounding (see the first test); summed losses are 16x the means, so is their
        # absolute rounding (measured here: 4e-6 on the losses), hence atol 1e-5
        for expected, got, _, _ in outputs:
            for key in expected.keys():
                torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)
        torch.testing.assert_close(_weights(fast_loss), _weights(reference_loss), rtol=1e-5, atol=1e-5)

    def test_float32_sigma_sampling_changes_the_stream_not_the_law(self):
        loss = _loss()
        update = DTQLUpdater(loss, _sgd(loss, lr=0.0), sigma_sampling_dtype=torch.float32)
        batch = make_batch(4096, seed=0)
        torch.manual_seed(0)
        fast = update(batch, pretrain=True)["loss_diffusion"]
        torch.manual_seed(0)
        reference = loss.diffusion_loss(batch)[0]
        assert fast != reference  # a different random stream...
        torch.testing.assert_close(fast, reference, rtol=0.1, atol=0)  # ...for the same loss in expectation

    def test_parameters_stay_shared_with_the_loss(self):
        """The updater steps the loss's own parameters: a later dtql_update_step sees the updated weights."""
        loss = _loss()
        optimizers = _sgd(loss)
        update = make_dtql_update_fn(loss, optimizers)
        update(make_batch(16))
        after_fast = _weights(loss)
        assert not torch.equal(after_fast["actor_network_params.module.0.module.net.0.weight"],
                               _weights(_loss())["actor_network_params.module.0.module.net.0.weight"])  # fmt: skip
        for group in optimizers.actor.param_groups:
            assert all(any(p is q for q in loss.actor_network_params.values(True, True)) for p in group["params"])

    def test_validates_the_first_batch_only(self):
        loss = _loss()
        update = DTQLUpdater(loss, _sgd(loss))
        bad = make_batch(8)
        bad["observation"][0, 0] = float("nan")
        with pytest.raises(ValueError, match="non-finite"):
            update(bad)
        update(make_batch(8))
        update(bad)  # no host sync after the first batch: the NaN goes through

    def test_the_first_batch_fixes_the_entries_read(self):
        loss = _loss()
        update = DTQLUpdater(loss, _sgd(loss), validate=False)
        update(make_batch(8))
        with_extra = make_batch(8, seed=1)
        with_extra["index"] = torch.arange(8)
        update(with_extra)  # extra entries are ignored
        missing = make_batch(8, seed=2).exclude(("next", "terminated"))
        with pytest.raises(KeyError):
            update(missing)

    def test_invalid_configurations(self):
        loss = _loss(reduction="none")
        with pytest.raises(ValueError, match="scalar loss"):
            DTQLUpdater(loss, _sgd(loss))
        loss = _loss()
        with pytest.raises(ValueError, match="capturable"):
            DTQLUpdater(loss, make_dtql_optimizers(loss, fused=True), cudagraphs=True)
        with pytest.raises(ValueError, match="warmup"):
            DTQLUpdater(loss, _sgd(loss), warmup=0)

    @pytest.mark.slow
    @pytest.mark.parametrize("alpha", [2.0, "auto"])
    def test_compiled_matches_eager(self, alpha):
        _, _, outputs = _run_both({"compile": True}, loss_kwargs={"alpha": alpha})
        # inductor fuses and reorders the float32 ops (other reduction orders, fused multiply-adds): 10x the eager
        # fast path's tolerance
        for expected, got, expected_draw, got_draw in outputs:
            for key in expected.keys():
                torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
            # exact on purpose: the compiled step must consume the same random draws as eager
            torch.testing.assert_close(got_draw, expected_draw, rtol=0, atol=0)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
    def test_cudagraphs_match_eager_on_cuda(self):
        device = torch.device("cuda")
        torch.manual_seed(0)
        reference_loss = DTQLLoss(**make_dtql_modules(OBS_DIM, ACTION_DIM, hidden_dim=32, device=device), alpha=2.0)
        graphed_loss = copy.deepcopy(reference_loss)
        reference_opt = make_dtql_optimizers(reference_loss)
        graphed_opt = make_dtql_optimizers(graphed_loss, fused=True, capturable=True)
        update = DTQLUpdater(graphed_loss, graphed_opt, cudagraphs=True, warmup=2)
        for i in range(6):
            batch = make_batch(16, seed=i).to(device)
            torch.manual_seed(100 + i)
            expected = dtql_update_step(reference_loss, reference_opt, batch.clone(), fast=False)
            torch.manual_seed(100 + i)
            got = update(batch.clone())
            # graph replay of the fused, capturable Adam step vs eager for-loop Adam: float32 rounding grown by
            # Adam's normalisation over 6 steps, as in test_fused_adam_matches_default_adam
            for key in expected.keys():
                torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


class TestExpMish:
    X = torch.cat([torch.linspace(-60, 60, 2001), torch.tensor([0.0, -1e-8, 1e-8, 200.0, -200.0, -1e4, 1e4])])

    def test_formula_values_and_gradients_in_float64(self):
        x = self.X.double().requires_grad_()
        y = mish_via_exp(x)
        torch.testing.assert_close(y, nn.functional.mish(x), rtol=1e-12, atol=1e-12)
        (grad,) = torch.autograd.grad(y.sum(), x)
        (expected,) = torch.autograd.grad(nn.functional.mish(x).sum(), x)
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-9)

    def test_module_matches_mish_in_float32(self):
        """The eager module has a hand-written backward: compare values and gradients with ATen's Mish."""
        x = self.X.clone().requires_grad_()
        y = ExpMish()(x)
        expected = nn.functional.mish(x)
        torch.testing.assert_close(y, expected, rtol=2e-6, atol=2e-6)
        weights = torch.randn_like(x)
        (grad,) = torch.autograd.grad((y * weights).sum(), x)
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(grad).all()
        with torch.no_grad():  # the inference path (no autograd.Function)
            torch.testing.assert_close(ExpMish()(x), expected, rtol=2e-6, atol=2e-6)

    def test_replace_mish_swaps_every_mish_of_a_copy(self):
        net = nn.Sequential(nn.Linear(4, 8), nn.Mish(), nn.Sequential(nn.Linear(8, 8), nn.Mish()))
        copy_ = replace_mish_(copy.deepcopy(net))
        assert sum(isinstance(m, ExpMish) for m in copy_.modules()) == 2
        assert not any(isinstance(m, nn.Mish) for m in copy_.modules())
        assert sum(isinstance(m, nn.Mish) for m in net.modules()) == 2  # the original is untouched
        x = torch.randn(5, 4)
        # exp-based Mish vs ATen's (each within 2e-6 of the other, above) through a Linear: float32 rounding
        torch.testing.assert_close(copy_(x), net(x), rtol=1e-5, atol=1e-6)


class TestEnsembleValues:
    def test_loop_and_vmap_agree_with_separate_networks(self):
        from torchrl_dtql.modules.critics import CriticMLP

        torch.manual_seed(0)
        nets = [CriticMLP(5, hidden_dim=8) for _ in range(3)]
        params = {k: torch.stack([n.state_dict()[k] for n in nets]) for k in nets[0].state_dict()}
        x = torch.randn(4, 5)
        expected = torch.stack([n(x) for n in nets])
        for loop in (True, False):
            torch.testing.assert_close(ensemble_values(nets[0], params, [x], loop=loop), expected)


class TestFastReranking:
    @pytest.mark.parametrize("batch_shape", [[], [1], [5], [2, 3]])
    @pytest.mark.parametrize("temperature", [1.0, 0.0])
    def test_same_actions_as_the_reference_selection(self, batch_shape, temperature):
        loss = _loss()
        loss.target_qvalue_network_params.apply(lambda p: p.data.add_(0.1 * torch.randn_like(p)))  # target != online
        policy = QRerankingActor.from_loss(loss, num_candidates=32, temperature=temperature)
        observation = torch.randn(*batch_shape, OBS_DIM)
        torch.manual_seed(7)
        expected, candidates, min_q = reference_rerank(loss, observation, 32, temperature)
        expected_draw = torch.rand(2)
        torch.manual_seed(7)
        got = policy(TensorDict(observation=observation, batch_size=batch_shape))["action"]
        assert got.shape == expected.shape
        # two code paths (one policy call per state vs per candidate, fast Mish, looped ensemble): the same pick
        # to float32 rounding, where an argmax near-tie may go either way
        assert_same_reranked_pick(got, expected, candidates, min_q, temperature=temperature)
        # exact on purpose: the same generator must have consumed the same number of draws
        torch.testing.assert_close(torch.rand(2), expected_draw, rtol=0, atol=0)

    def test_follows_training_of_actor_and_target_critic(self):
        """Built before training, it acts as one built after: it reads the loss's parameters by reference."""
        loss = _loss()
        early = QRerankingActor.from_loss(loss, num_candidates=32, temperature=0.0)
        optimizers = make_dtql_optimizers(loss, lr=1e-2)
        updater = SoftUpdate(loss, tau=0.5)
        for i in range(3):
            dtql_update_step(loss, optimizers, make_batch(32, seed=i), target_updater=updater)
        late = QRerankingActor.from_loss(loss, num_candidates=32, temperature=0.0)
        td = TensorDict(observation=torch.randn(6, OBS_DIM), batch_size=[6])
        torch.manual_seed(0)
        expected = late(td.clone())["action"]
        torch.manual_seed(0)
        # exact on purpose: one class, one code path, the same parameter tensors (read by reference) and seed
        torch.testing.assert_close(early(td.clone())["action"], expected, rtol=0, atol=0)
        torch.manual_seed(0)
        assert not torch.allclose(QRerankingActor.from_loss(_loss(), 32, 0.0)(td.clone())["action"], expected)

    def test_generic_actor_and_module_list_paths(self):
        """A non-probabilistic actor and a list of Q modules take the reference layout and still work."""
        from tensordict.nn import TensorDictModule

        modules = make_dtql_modules(OBS_DIM, Bounded(-1.0, 1.0, shape=(ACTION_DIM,)), hidden_dim=16)
        deterministic = TensorDictModule(nn.Sequential(nn.Linear(OBS_DIM, ACTION_DIM), nn.Tanh()),
                                         in_keys=["observation"], out_keys=["action"])  # fmt: skip
        policy = QRerankingActor(deterministic, modules["qvalue_network"], num_candidates=4, temperature=0.0)
        observation = torch.randn(3, OBS_DIM)
        out = policy(TensorDict(observation=observation, batch_size=[3]))["action"]
        torch.testing.assert_close(out, deterministic.module(observation))

    def test_compile_needs_a_stacked_ensemble(self):
        modules = make_dtql_modules(OBS_DIM, ACTION_DIM, hidden_dim=16)
        with pytest.raises(ValueError, match="stacked"):
            QRerankingActor(modules["actor_network"], modules["qvalue_network"], compile=True)

    @pytest.mark.slow
    def test_compiled_reranking_matches_eager(self):
        loss = _loss()
        eager = QRerankingActor.from_loss(loss, num_candidates=64, temperature=0.0)
        compiled = QRerankingActor.from_loss(loss, num_candidates=64, temperature=0.0, compile=True)
        td = TensorDict(observation=torch.randn(4, OBS_DIM), batch_size=[4])
        torch.manual_seed(3)
        _, candidates, min_q = reference_rerank(loss, td["observation"], 64, 0.0)
        torch.manual_seed(3)
        expected = eager(td.clone())["action"]
        torch.manual_seed(3)
        # compiled (fused kernels, one vmapped ensemble call) vs eager: float32 rounding, and argmax near-ties
        assert_same_reranked_pick(compiled(td.clone())["action"], expected, candidates, min_q, temperature=0.0)

    @pytest.mark.slow
    def test_inductor_backend_keeps_eager_random_streams(self):
        f = torch.compile(lambda x: x + torch.randn_like(x), backend=make_inductor_backend())
        x = torch.zeros(64)
        torch.manual_seed(0)
        expected = x + torch.randn_like(x)
        torch.manual_seed(0)
        # exact on purpose: the compiled function must draw the very numbers eager draws (x is 0, so x + r is r)
        torch.testing.assert_close(f(x), expected, rtol=0, atol=0)


def test_a_loss_subclass_changing_the_q_target_changes_the_fast_path_too():
    """The fast path reads the Q target through DTQLLoss.qvalue_target, so a subclass that changes it (here: clipped
    targets) keeps the fast path and trains as the plain path does, and differently from the unchanged loss."""
    from torchrl_dtql.objectives.update import cached_updater

    class ClippedTargetLoss(DTQLLoss):
        def qvalue_target(self, tensordict, next_value=None):
            return super().qvalue_target(tensordict, next_value=next_value).clamp(-0.5, 0.5)

    def trained(loss_class, fast):
        torch.manual_seed(0)
        loss = loss_class(**make_dtql_modules(OBS_DIM, ACTION_DIM, hidden_dim=32), alpha=2.0)
        optimizers = _sgd(loss)
        if fast:
            assert cached_updater(loss, optimizers) is not None  # still the fast path
        for i in range(3):
            torch.manual_seed(100 + i)
            out = dtql_update_step(loss, optimizers, make_batch(16, seed=i), fast=fast)
        return out, _weights(loss)

    (fast_out, fast_w), (plain_out, plain_w) = trained(ClippedTargetLoss, True), trained(ClippedTargetLoss, False)
    # fast vs plain path: float32 rounding, as in test_same_parameters_and_losses_as_dtql_update_step
    for key in plain_out.keys():
        torch.testing.assert_close(fast_out[key], plain_out[key], rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(fast_w, plain_w, rtol=1e-5, atol=1e-6)
    unclipped_out, _ = trained(DTQLLoss, True)
    assert not torch.allclose(unclipped_out["loss_qvalue"], fast_out["loss_qvalue"], rtol=1e-3)
