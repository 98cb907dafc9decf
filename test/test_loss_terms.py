"""The loss terms (torchrl_dtql/objectives/terms.py): their formulas, and that every training path computes them there.

Three kinds of checks:

* each term against the formula of ``dtql_spec.md`` section 2, written out here with plain tensors;
* both paths, ``DTQLLoss``'s ``*_loss`` methods and the fused ``DTQLUpdater``, give the same losses and the same
  gradients on one batch (several configurations: NLL term, sum reduction, priority weights, loss masks);
* a change to any term changes training on every path: each term is replaced in turn by a perturbed one, and the
  plain step, the default ``dtql_update_step`` and ``make_dtql_update_fn`` must all follow it, and still agree.
  Static checks back this up: the loss methods and the updater hold no arithmetic of their own, the updater reads no
  private name of the loss, and the objectives modules import each other without a cycle.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules import TanhNormal
from torchrl.objectives import SoftUpdate

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_update_fn
from torchrl_dtql.objectives import terms
from torchrl_dtql.objectives.dtql import AUTO_ALPHA_RULES
from torchrl_dtql.objectives.fast_update import DTQLUpdater
from torchrl_dtql.objectives.optimizers import DTQLOptimizers, trainable_parameters
from torchrl_dtql.objectives.update import cached_updater

from _dtql_common import ACTION_DIM, make_batch, make_loss, OBS_DIM

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]

OBJECTIVES = Path(terms.__file__).parent


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: a second thread only adds synchronisation on shared cores (see test_fast_update.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss(**kwargs) -> DTQLLoss:
    """The same weights at every call (``make_loss`` draws them from the seeded global generator)."""
    torch.manual_seed(0)
    return make_loss(**{"alpha": 2.0, **kwargs})


def _parameter_groups(loss: DTQLLoss) -> dict[str, list[torch.Tensor]]:
    critic = trainable_parameters(loss.qvalue_network_params) + trainable_parameters(loss.value_network_params)
    groups = {
        "critic": critic,
        "diffusion": trainable_parameters(loss.diffusion_network_params),
        "actor": trainable_parameters(loss.actor_network_params),
    }
    if loss.learns_log_alpha:
        groups["alpha"] = [loss.log_alpha]
    return groups


def _sgd(loss: DTQLLoss, lr: float) -> DTQLOptimizers:
    return DTQLOptimizers(**{name: torch.optim.SGD(p, lr=lr) for name, p in _parameter_groups(loss).items()})


# ---------------------------------------------------------------------------------------------------- the formulas
class TestTermFormulas:
    def test_qvalue_regression_sums_squared_errors_over_the_ensemble_and_stops_the_target_gradient(self):
        q_values = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 0.5]], requires_grad=True)
        target = torch.tensor([2.0, 0.0, 0.5], requires_grad=True)
        loss = terms.qvalue_regression_loss(q_values, target)
        torch.testing.assert_close(loss, ((q_values - target) ** 2).sum(0))
        loss.sum().backward()
        assert target.grad is None and q_values.grad is not None
        torch.testing.assert_close(terms.td_error(q_values, target), ((q_values - target) ** 2).detach())
        assert not terms.td_error(q_values, target).requires_grad

    def test_value_regression_is_the_expectile_loss_on_the_detached_ensemble_min(self):
        q_values = torch.tensor([[3.0, 0.0, 1.0], [2.0, 1.0, 1.0]], requires_grad=True)
        value = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
        loss = terms.value_regression_loss(q_values, value, 0.9)
        u = torch.tensor([1.0, -1.0, 0.0])  # min_i Q_i - V
        torch.testing.assert_close(loss, torch.where(u < 0, 0.1, 0.9) * u**2)
        loss.sum().backward()
        assert q_values.grad is None and value.grad is not None

    def test_ensemble_diagnostics(self):
        q_values = torch.tensor([[1.0, 4.0], [3.0, -2.0]], requires_grad=True)
        torch.testing.assert_close(terms.ensemble_min(q_values), torch.tensor([1.0, -2.0]))
        torch.testing.assert_close(terms.mean_qvalue(q_values), torch.tensor([2.0, 1.0]))
        assert not terms.mean_qvalue(q_values).requires_grad

    def test_dataset_action_nll_rescales_to_the_unit_box_and_has_no_tanh_jacobian(self):
        loc, scale = torch.tensor([[0.2, -0.3]]), torch.tensor([[0.5, 1.5]])
        dist = TanhNormal(loc, scale, low=torch.tensor([-2.0, 0.0]), high=torch.tensor([2.0, 1.0]))
        action = torch.tensor([[1.0, 1.0]])  # unit-box coordinates: 0.5 and 1 (a boundary action)
        unit = torch.tensor([[0.5, 1.0]])
        expected = -torch.distributions.Normal(loc, scale).log_prob(torch.atanh(unit / 1.001)).sum(-1)
        nll = terms.dataset_action_nll(dist, action, 1e-3)
        torch.testing.assert_close(nll, expected)
        assert torch.isfinite(nll).all()

    def test_actor_objective_is_unnormalised(self):
        trust_region, min_q, nll = torch.tensor([0.5, 2.0]), torch.tensor([10.0, -4.0]), torch.tensor([1.0, 3.0])
        got = terms.actor_objective(trust_region, min_q, nll, alpha=3.0, gamma_nll=0.25)
        torch.testing.assert_close(got, torch.tensor([3 * 0.5 - 10 + 0.25, 3 * 2.0 + 4 + 0.75]))

    def test_diffusion_terms_are_the_edm_loss_and_the_trust_region_moves_only_the_action(self):
        model = make_dtql_modules(OBS_DIM, ACTION_DIM, hidden_dim=16)["diffusion_network"].module
        action, observation = torch.rand(8, ACTION_DIM) * 2 - 1, torch.randn(8, OBS_DIM)
        sigma = torch.full((8, 1), 0.7)
        torch.manual_seed(0)
        expected = model.denoising_loss(action, observation, sigma=sigma)
        torch.manual_seed(0)
        torch.testing.assert_close(terms.behaviour_cloning_loss(model, action, observation, sigma=sigma), expected)

        model.requires_grad_(False)  # frozen, as both paths freeze it for the trust region
        policy_action = (torch.rand(8, ACTION_DIM) * 2 - 1).requires_grad_()
        terms.trust_region_loss(model, policy_action, observation).sum().backward()
        assert policy_action.grad is not None and policy_action.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.parameters())

    def test_policy_scale(self):
        dist = TanhNormal(torch.zeros(4, 2), torch.tensor([0.5, 1.5]).expand(4, 2), low=-1.0, high=1.0)
        torch.testing.assert_close(terms.policy_scale(dist), torch.ones(4))


# ---------------------------------------------------------------------------------------------------- both paths
CONFIGURATIONS = {
    "default": ({}, None),
    "nll term, sum reduction": ({"gamma_nll": 0.5, "reduction": "sum"}, None),
    "priority weights": ({}, "priority_weight"),
    "loss mask": ({}, ("collector", "mask")),
}


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_loss_methods_and_updater_give_the_same_losses_and_gradients(configuration):
    """One batch, the same parameters and seed: the four loss methods (with autograd) against one DTQLUpdater step
    with learning rate 0, whose backward passes leave the gradients of the very same losses in ``.grad``."""
    loss_kwargs, extra = CONFIGURATIONS[configuration]
    batch_size = 64
    batch = make_batch(batch_size, seed=3)
    if extra == "priority_weight":
        batch["priority_weight"] = torch.rand(batch_size, generator=torch.Generator().manual_seed(1))
    elif extra is not None:
        batch[extra] = torch.rand(batch_size, generator=torch.Generator().manual_seed(1)) > 0.3

    methods_loss, updater_loss = _loss(**loss_kwargs), _loss(**loss_kwargs)
    torch.manual_seed(5)
    loss_qvalue, _ = methods_loss.qvalue_loss(batch)
    loss_value, _ = methods_loss.value_loss(batch)
    loss_diffusion, _ = methods_loss.diffusion_loss(batch)
    loss_actor, _ = methods_loss.actor_loss(batch)
    groups = _parameter_groups(methods_loss)
    expected_grads = {
        "critic": torch.autograd.grad(loss_qvalue + loss_value, groups["critic"]),
        "diffusion": torch.autograd.grad(loss_diffusion, groups["diffusion"]),
        "actor": torch.autograd.grad(loss_actor, groups["actor"]),
    }

    update = make_dtql_update_fn(updater_loss, _sgd(updater_loss, lr=0.0))
    torch.manual_seed(5)
    out = update(batch)

    # Two code paths for the same float32 maths (vmap vs a loop over the twin Q, ExpMish vs ATen's Mish, one fused
    # backward): measured here, losses within 2.4e-7 and gradients within 2.4e-7 absolute for mean losses (of size
    # ~1), 64x that for summed ones; 10x margins.
    scale = batch_size if loss_kwargs.get("reduction") == "sum" else 1
    expected_losses = {"loss_qvalue": loss_qvalue, "loss_value": loss_value, "loss_diffusion": loss_diffusion,
                       "loss_actor": loss_actor}  # fmt: skip
    for key, expected in expected_losses.items():
        torch.testing.assert_close(out[key], expected.detach(), rtol=1e-5, atol=2e-6 * scale, msg=key)
    for name, params in _parameter_groups(updater_loss).items():
        for i, (param, expected) in enumerate(zip(params, expected_grads[name])):
            assert param.grad is not None, (name, i)
            torch.testing.assert_close(param.grad, expected, rtol=1e-5, atol=2e-6 * scale, msg=f"{name}[{i}]")


# Where each term shows in one main-phase step's outputs (and hence in the trained parameters).
TERM_OUTPUTS = {
    "actor_objective": ["loss_actor"],
    "behaviour_cloning_loss": ["loss_diffusion"],
    "dataset_action_nll": ["loss_actor", "nll_data"],
    "ensemble_min": ["loss_value", "loss_actor", "min_q_actor"],
    "expectile_loss": ["loss_value"],
    "mean_qvalue": ["pred_value"],
    "policy_scale": ["policy_std"],
    "qvalue_regression_loss": ["loss_qvalue"],
    "trust_region_loss": ["loss_actor", "trust_region"],
    "value_regression_loss": ["loss_value"],
}
# The self-tuning weight's terms: the auto_alpha rule that uses each, and its outputs (``alpha`` is the weight a step
# used: with the multiplier, the second step's comes from the first step's multiplier update; with q_scale, from the
# step's own batch).
AUTO_ALPHA_TERM_OUTPUTS = {
    "trust_region_multiplier_loss": ("multiplier", ["loss_alpha", "alpha", "loss_actor"]),
    "trust_region_weight_scale": ("multiplier", ["alpha", "loss_actor"]),  # the data-fixed start of the multiplier
    "q_scaled_trust_region_weight": ("q_scale", ["alpha", "loss_actor"]),
}
# Terms that no update step reads: the TD error is written for prioritized replay by DTQLLoss.forward only.
FORWARD_ONLY_TERMS = {"td_error": "td_error"}
# DTQLLoss methods that both paths call.
SHARED_METHODS = {"qvalue_target": ["loss_qvalue"], "reduce": ["loss_qvalue", "loss_value", "loss_actor"]}


def test_every_term_is_listed_here():
    assert set(TERM_OUTPUTS) | set(AUTO_ALPHA_TERM_OUTPUTS) | set(FORWARD_ONLY_TERMS) == set(terms.__all__)


def _perturbed(function):
    def perturbed(*args, **kwargs):
        return function(*args, **kwargs) * 1.5

    return perturbed


def _train_on_every_path(steps: int = 2, **loss_kwargs) -> dict[str, tuple[list[TensorDict], dict[str, torch.Tensor]]]:
    """The same seeded main-phase steps through the plain step, the default dtql_update_step and
    make_dtql_update_fn (eager); per path, the step outputs and the trained parameters."""
    runs = {}
    for path in ("plain", "default", "make_dtql_update_fn"):
        loss = _loss(gamma_nll=0.5, **loss_kwargs)  # the NLL term counts
        optimizers, target_updater = _sgd(loss, lr=0.05), SoftUpdate(loss, tau=0.1)
        if path == "make_dtql_update_fn":
            step = make_dtql_update_fn(loss, optimizers, target_updater=target_updater)
        else:
            fast = path == "default"
            if fast:  # really the cached fast updater, not a silent fallback to the plain step
                assert cached_updater(loss, optimizers, target_updater) is not None

            def step(batch, loss=loss, optimizers=optimizers, target_updater=target_updater, fast=fast):
                return dtql_update_step(loss, optimizers, batch, target_updater=target_updater, fast=fast)

        outputs = []
        for i in range(steps):
            batch = make_batch(16, seed=i)
            torch.manual_seed(100 + i)
            outputs.append(step(batch))
        runs[path] = outputs, {k: v.detach().clone() for k, v in loss.state_dict().items()}
    return runs


def _assert_paths_agree(runs) -> None:
    # the fast paths' float32 rounding against the plain one, as in test_fast_update.py (outputs within 4e-7
    # absolute, weights within 1.2e-7 after 5 SGD steps there): rtol 1e-5 / atol 1e-5 (the NLL term adds ~10 to the
    # actor loss, so its rounding is ~10x the others')
    plain_outputs, plain_weights = runs["plain"]
    for path, (outputs, weights) in runs.items():
        for expected, got in zip(plain_outputs, outputs):
            for key in expected.keys():
                torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5, msg=f"{path}: {key}")
        for key in plain_weights:
            torch.testing.assert_close(weights[key], plain_weights[key], rtol=1e-5, atol=1e-5, msg=f"{path}: {key}")


@pytest.fixture(scope="module")
def unperturbed_runs():
    return _train_on_every_path()


@pytest.fixture(scope="module")
def unperturbed_auto_alpha_runs():
    """``{auto_alpha rule: runs}``."""
    return {rule: _train_on_every_path(steps=3, alpha="auto", auto_alpha=rule) for rule in AUTO_ALPHA_RULES}


def test_unperturbed_paths_agree(unperturbed_runs, unperturbed_auto_alpha_runs):
    _assert_paths_agree(unperturbed_runs)
    for runs in unperturbed_auto_alpha_runs.values():
        _assert_paths_agree(runs)


@pytest.mark.parametrize("name", sorted(AUTO_ALPHA_TERM_OUTPUTS))
def test_a_changed_alpha_term_changes_training_on_every_path(name, monkeypatch, unperturbed_auto_alpha_runs):
    """The same check for the self-tuning weight's terms (``alpha="auto"``): every path tunes alpha with them."""
    rule, changed_keys = AUTO_ALPHA_TERM_OUTPUTS[name]
    monkeypatch.setattr(terms, name, _perturbed(getattr(terms, name)))
    runs = _train_on_every_path(steps=3, alpha="auto", auto_alpha=rule)
    _assert_paths_agree(runs)
    before, after = unperturbed_auto_alpha_runs[rule]["plain"][0][-1], runs["plain"][0][-1]
    for key in changed_keys:  # SGD at lr 0.05: a 1.5x gradient moves log(alpha) visibly; q_scale's alpha is 1.5x
        assert not torch.allclose(after[key], before[key], rtol=1e-4, atol=1e-6), (name, key)


@pytest.mark.parametrize("name", sorted(TERM_OUTPUTS) + sorted(SHARED_METHODS))
def test_a_changed_term_changes_training_on_every_path(name, monkeypatch, unperturbed_runs):
    """Scaling one term by 1.5 must change what every path trains on, identically: a path with a formula of its
    own for that term would keep the old numbers and disagree with the others."""
    if name in SHARED_METHODS:
        monkeypatch.setattr(DTQLLoss, name, _perturbed(getattr(DTQLLoss, name)))
        changed_keys = SHARED_METHODS[name]
    else:
        monkeypatch.setattr(terms, name, _perturbed(getattr(terms, name)))
        changed_keys = TERM_OUTPUTS[name]
    runs = _train_on_every_path()
    _assert_paths_agree(runs)
    before = unperturbed_runs["plain"][0][-1]
    after = runs["plain"][0][-1]
    for key in changed_keys:  # far above rounding: the term really counts
        assert not torch.allclose(after[key], before[key], rtol=1e-3, atol=1e-4), (name, key)


def test_the_td_error_term_is_what_forward_writes(monkeypatch):
    loss, batch = _loss(), make_batch(16)
    loss(batch)
    expected = batch["td_error"].clone()
    monkeypatch.setattr(terms, "td_error", _perturbed(terms.td_error))
    loss(batch)
    torch.testing.assert_close(batch["td_error"], 1.5 * expected)


# ---------------------------------------------------------------------------------------------------- static checks
def _function_ast(function) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


LOSS_COMPUTATIONS = [
    DTQLLoss.qvalue_loss,
    DTQLLoss.value_loss,
    DTQLLoss.diffusion_loss,
    DTQLLoss.actor_loss,
    DTQLUpdater._critic_and_diffusion_losses,
    DTQLUpdater._actor_losses,
]


@pytest.mark.parametrize("function", LOSS_COMPUTATIONS, ids=lambda f: f.__qualname__)
def test_loss_computations_hold_no_arithmetic_of_their_own(function):
    """The maths is in terms.py: the loss methods and the updater only evaluate networks and call the terms."""
    arithmetic = [ast.unparse(node) for node in ast.walk(_function_ast(function)) if isinstance(node, ast.BinOp)]
    assert not arithmetic, f"{function.__qualname__} computes {arithmetic}: move the formula to objectives/terms.py"


@pytest.mark.parametrize("module", ["fast_update.py", "update.py"])
def test_the_update_steps_read_only_public_names_of_the_loss(module):
    tree = ast.parse((OBJECTIVES / module).read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            is_loss = (isinstance(owner, ast.Name) and owner.id == "loss") or (
                isinstance(owner, ast.Attribute) and owner.attr == "loss"
            )
            if is_loss:
                private.append(ast.unparse(node))
    assert not private, f"{module} reads private names of the loss: {private}"


def _objectives_imports() -> dict[str, set[str]]:
    """``{module: objectives modules it imports}``, module-level and function-level imports alike."""
    graph = {}
    for path in OBJECTIVES.glob("*.py"):
        name = path.stem
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("torchrl_dtql.objectives."):
                    imported.add(node.module.rsplit(".", 1)[1])
                elif node.module == "torchrl_dtql.objectives":
                    imported |= {alias.name for alias in node.names}
        graph[name] = imported - {name}
    return graph


def test_objectives_modules_import_each_other_without_cycles():
    graph = _objectives_imports()
    graph.pop("__init__")  # the package re-exports everything: it imports, it is not imported from
    assert "update" not in graph["fast_update"] and "fast_update" in graph["update"]
    assert graph["terms"] == set(), "terms.py is the bottom layer"
    visiting, done = set(), set()

    def visit(module, chain):
        assert module not in visiting, f"import cycle: {' -> '.join([*chain, module])}"
        if module in done:
            return
        visiting.add(module)
        for dependency in graph.get(module, ()):
            visit(dependency, [*chain, module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])

