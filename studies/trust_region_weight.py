"""Why does DTQL score ~0 on a locally made halfcheetah "medium" dataset at short budgets? A trust-region study.

DTQL's critic (IQL, in-sample) and its diffusion model (behaviour cloning) never look at the policy, so one
critic/diffusion training run can serve several one-step policies with different trust-region weights ``alpha``
trained side by side on the same batches: exactly what separate runs would compute, at a fraction of the cost.
Every ``--eval-every`` main-phase steps each policy is evaluated (deterministic mean action and Q-reranked) and
diagnosed on a fixed held-out batch of dataset states:

* ``q_data`` / ``q_policy``: min-Q of the dataset action and of the policy's action;
* ``tr_policy`` / ``bc_data``: the diffusion (trust-region) loss of the policy's actions vs. of dataset actions
  (same noise draws) -- a policy inside the data's support has ``tr_policy`` close to ``bc_data``;
* ``saturation``: fraction of action coordinates with ``|a| > 0.99`` (policy vs. data);
* ``action_mse``: mean squared distance between the policy's mean action and the dataset action;
* ``grad_q`` / ``grad_tr``: mean per-sample norm of the gradient, with respect to the policy's action, of
  ``min Q`` and of the trust-region loss -- the policy follows ``grad_q - alpha * grad_tr``;
* ``abs_q_policy`` / ``std_q_data`` / ``alpha_used``: the scales a reward-free weight could be tied to (mean ``|min Q|``
  of the policy's actions, the spread of ``min Q`` of dataset actions over states) and the weight in use.

An ``--alphas`` entry is a fixed weight or a rule: ``q_scale`` (or ``q_scale:<alpha_per_q>``),
``DTQLLoss(alpha="auto")`` as it comes, alpha set before every actor step from the critic's ``|mean Q(s, a_data)|``; ``multiplier`` (or
``multiplier:<trust_region_ratio>``), ``alpha="auto", auto_alpha="multiplier"``, stepped as ``dtql_update_step`` steps
it; ``qabs:<c>``, the prototype of q_scale: alpha set after every actor step to ``c`` times the batch's mean
``|min Q(s, a_pi)|``. (``auto`` in the results of ``studies/results/trust_region_rules/`` is the multiplier, which
``alpha="auto"`` meant when they were made.) Results are written as they
come (``history.json``); not resumable: a killed run starts again.

Example::

    python studies/trust_region_weight.py --dataset local/halfcheetah/medium-v0 --alphas 1 10 100 \
        --pretrain-steps 10000 --steps 20000 --eval-every 5000 --out /tmp/tr_study
    python studies/trust_region_weight.py --dataset d4rl-like/halfcheetah/medium-v0 --alphas 3 10 30 100 auto \
        --pretrain-steps 10000 --steps 30000 --eval-every 10000 --eval-episodes 10 --out /tmp/tr_study_hc
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers, make_one_step_actor
from torchrl_dtql.objectives.optimizers import alpha_step, ALPHA_LR
from torchrl_dtql.data import make_offline_replay_buffer
from torchrl_dtql.evaluation import evaluate, make_eval_env
from torchrl_dtql.policies import make_acting_policy

EVAL_SEED_OFFSET = 100  # evaluation episodes start from env seed seed + 100, as in examples/dtql_offline.py
EVAL_MAX_STEPS = 1000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--alphas", nargs="+", default=["1", "10", "100"],
                   help="fixed weights, or q_scale[:<alpha_per_q>], multiplier[:<trust_region_ratio>], qabs:<c>")
    p.add_argument("--pretrain-steps", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=2)
    p.add_argument("--num-candidates", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--expectile", type=float, default=0.7)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    return p.parse_args()


@torch.no_grad()
def diagnose(loss: DTQLLoss, batch: TensorDict) -> dict[str, float]:
    obs, act = batch["observation"], batch["action"]
    td = batch.select("observation").copy()
    with set_exploration_type(ExplorationType.DETERMINISTIC), loss.actor_network_params.to_module(loss.actor_network):
        mean_action = loss.actor_network(td)["action"]
    with set_exploration_type(ExplorationType.RANDOM), loss.actor_network_params.to_module(loss.actor_network):
        sampled = loss.actor_network(batch.select("observation").copy())["action"]

    def min_q(a):
        q_td = loss._vmap_qvalue_networkN0(TensorDict(observation=obs, action=a, batch_size=obs.shape[:1]),
                                           loss.qvalue_network_params)
        return q_td["state_action_value"].amin(0).squeeze(-1)

    model = loss.diffusion_network.module
    g = torch.Generator().manual_seed(0)
    sigma = model.sigma_sampler((8, *act.shape[:-1], 1), generator=g)
    noise = torch.randn((8, *act.shape), generator=g)
    with loss.diffusion_network_params.to_module(loss.diffusion_network):
        tr = torch.stack([model.denoising_loss(sampled, obs, sigma=s, noise=n) for s, n in zip(sigma, noise)])
        bc = torch.stack([model.denoising_loss(act, obs, sigma=s, noise=n) for s, n in zip(sigma, noise)])
    # per-sample gradient norms, w.r.t. the action, of the two competing terms of the actor loss
    a = sampled.clone().requires_grad_()
    with torch.enable_grad():
        grad_q = torch.autograd.grad(min_q(a).sum(), a)[0].norm(dim=-1)
        with loss.diffusion_network_params.to_module(loss.diffusion_network):
            tr_a = model.denoising_loss(a, obs, sigma=sigma[0], noise=noise[0])
        grad_tr = torch.autograd.grad(tr_a.sum(), a)[0].norm(dim=-1)
    q_data = min_q(act)
    return {
        "alpha_used": float(loss.alpha),
        "abs_q_policy": float(min_q(sampled).abs().mean()),
        "std_q_data": float(q_data.std()),
        "grad_q": float(grad_q.mean()),
        "grad_tr": float(grad_tr.mean()),
        "q_data": float(q_data.mean()),
        "q_policy": float(min_q(sampled).mean()),
        "tr_policy": float(tr.mean()),
        "bc_data": float(bc.mean()),
        "saturation_policy": float((sampled.abs() > 0.99).float().mean()),
        "saturation_data": float((act.abs() > 0.99).float().mean()),
        "action_mse": float((mean_action - act).pow(2).mean()),
    }


def parse_alpha(spec: str) -> dict:
    """``DTQLLoss`` keyword arguments of one ``--alphas`` entry.

    Examples:
        >>> parse_alpha("10"), parse_alpha("multiplier:0.8")
        ({'alpha': 10.0}, {'alpha': 'auto', 'auto_alpha': 'multiplier', 'trust_region_ratio': 0.8})
    """
    rule, _, value = spec.partition(":")
    if rule == "multiplier":
        return {"alpha": "auto", "auto_alpha": "multiplier", **({"trust_region_ratio": float(value)} if value else {})}
    if rule == "q_scale":
        return {"alpha": "auto", "auto_alpha": "q_scale", **({"alpha_per_q": float(value)} if value else {})}
    if rule == "qabs":
        return {"alpha": 1.0}  # overwritten from the batch's |Q| after every actor step
    return {"alpha": float(spec)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rb = make_offline_replay_buffer(args.dataset, args.batch_size)
    info = rb.metadata
    held_out = rb.sample(2048).exclude("index")
    modules = make_dtql_modules(info.observation_spec, info.action_spec)
    critic_loss = DTQLLoss(**modules, alpha=1.0, expectile=args.expectile, check_finite=False)
    optimizers = make_dtql_optimizers(critic_loss, lr=args.lr)
    updater = SoftUpdate(critic_loss, tau=0.005)
    obs_dim = int(info.observation_spec.shape[-1])
    policies = {}
    for alpha in args.alphas:
        actor = make_one_step_actor(obs_dim, info.action_spec)
        loss = DTQLLoss(actor, modules["diffusion_network"], modules["qvalue_network"], modules["value_network"],
                        **parse_alpha(alpha), expectile=args.expectile, check_finite=False)
        assert loss.diffusion_network_params["module", "denoiser", "trunk", "0", "weight"].data_ptr() == \
            critic_loss.diffusion_network_params["module", "denoiser", "trunk", "0", "weight"].data_ptr()
        alpha_opt = torch.optim.Adam([loss.log_alpha], lr=ALPHA_LR) if loss.learns_log_alpha else None
        actor_opt = torch.optim.Adam(list(loss.actor_network_params.values(True, True)), lr=args.lr)
        policies[alpha] = (loss, actor_opt, alpha_opt)

    eval_env = make_eval_env(info, num_envs=args.eval_episodes)

    def score(policy) -> float:
        """Mean normalized score of ``policy`` on the evaluation episodes (the same ones at every evaluation)."""
        result = evaluate(eval_env, policy, episodes=args.eval_episodes, max_steps=EVAL_MAX_STEPS,
                          seed=args.seed + EVAL_SEED_OFFSET, info=info)  # fmt: skip
        return result["normalized_score"]["mean"]

    def sync_critic(loss: DTQLLoss) -> None:
        loss.qvalue_network_params.data.copy_(critic_loss.qvalue_network_params.data)
        loss.target_qvalue_network_params.data.copy_(critic_loss.target_qvalue_network_params.data)

    history: list[dict] = []
    start = time.time()
    for step in range(args.pretrain_steps):
        batch = rb.sample()
        for opt_loss, opt in ((critic_loss.diffusion_loss(batch)[0], optimizers.diffusion),):
            opt.zero_grad(); opt_loss.backward(); opt.step()
        lq, _ = critic_loss.qvalue_loss(batch)
        lv, _ = critic_loss.value_loss(batch)
        optimizers.critic.zero_grad(); (lq + lv).backward(); optimizers.critic.step()
        if step % 2000 == 0:
            print(f"pretrain {step} {time.time() - start:.0f}s", flush=True)
    main_start = time.time()
    for step in range(1, args.steps + 1):
        batch = rb.sample()
        lq, meta_q = critic_loss.qvalue_loss(batch)
        lv, _ = critic_loss.value_loss(batch)
        optimizers.critic.zero_grad(); (lq + lv).backward(); optimizers.critic.step()
        ld, _ = critic_loss.diffusion_loss(batch)
        optimizers.diffusion.zero_grad(); ld.backward(); optimizers.diffusion.step()
        for spec, (loss, actor_opt, alpha_opt) in policies.items():
            sync_critic(loss)
            if loss.auto_alpha == "q_scale":  # as both update paths do, between the critic's forward and the actor
                loss.scale_alpha_(meta_q["pred_value"])
            la, meta = loss.actor_loss(batch)
            actor_opt.zero_grad(); la.backward(); actor_opt.step()
            if alpha_opt is not None:  # the multiplier step of dtql_update_step, after the actor's
                alpha_step(loss, alpha_opt, meta["trust_region"], ld.detach(), meta["min_q_actor"])
            elif spec.startswith("qabs:"):
                loss.alpha.fill_(float(spec.split(":", 1)[1]) * float(meta["min_q_actor"].abs().mean()))
        updater.step()
        if step % 1000 == 0:
            print(f"main {step} {step / (time.time() - main_start):.1f} steps/s (evaluations included)", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            for alpha, (loss, _, _) in policies.items():
                sync_critic(loss)
                row = {"step": step, "alpha": alpha, "elapsed_s": time.time() - start, **diagnose(loss, held_out)}
                row["score_mean_action"] = score(make_acting_policy(loss, "mean"))
                row["score_reranked"] = score(make_acting_policy(loss, "reranked", num_candidates=args.num_candidates))
                history.append(row)
                print(json.dumps(row), flush=True)
            tmp = out / "history.json.tmp"
            tmp.write_text(json.dumps(history, indent=1))
            os.replace(tmp, out / "history.json")
    # the diffusion behaviour-cloning policy (iterative sampling), same budget
    bc_score = score(make_acting_policy(critic_loss, "diffusion_bc"))
    eval_env.close()
    summary = {"args": vars(args), "bc_score": bc_score, "history": history, "wall_s": time.time() - start}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "summary.json")
    print("diffusion BC score", bc_score)


if __name__ == "__main__":
    main()
