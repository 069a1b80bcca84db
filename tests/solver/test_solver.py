"""Optimizer parameter groups, full-model gradient clipping and the poly schedule."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from dinat_m2f.config import add_dinat_config, add_maskformer2_config
from dinat_m2f.solver import PolyParamScheduler, build_lr_scheduler, build_optimizer


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.rpb = nn.Parameter(torch.zeros(2, 5, 5))


class Toy(nn.Module):
    """Parameters of every kind the recipe treats differently."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"attn": Attention(), "norm": nn.LayerNorm(4)})
        self.head = nn.ModuleDict(
            {"proj": nn.Linear(4, 4), "gn": nn.GroupNorm(2, 4), "query": nn.Embedding(3, 4)}
        )
        self.head.level_embed = nn.Parameter(torch.zeros(3, 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _cfg(**solver):
    cfg = get_cfg()
    add_dinat_config(cfg)
    add_maskformer2_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _full_model_clipping(cfg, max_norm):
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = max_norm
    return cfg


def _clipped_sgd_cfg():
    """Plain SGD with lr 1, clipped to a global norm of 0.01: the update is the clipped gradient."""
    return _full_model_clipping(
        _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, WEIGHT_DECAY=0.0, BASE_LR=1.0), 0.01
    )


def _settings(optimizer, model):
    """parameter name -> (lr, weight_decay)."""
    by_param = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_param[p] = (group["lr"], group["weight_decay"])
    return {name: by_param.get(p) for name, p in model.named_parameters()}


def test_param_groups_follow_the_recipe():
    model = Toy()
    settings = _settings(build_optimizer(_cfg(), model), model)
    assert settings["backbone.attn.qkv.weight"] == pytest.approx((1e-5, 0.05))
    assert settings["backbone.attn.rpb"] == pytest.approx((1e-5, 0.0))  # RPB: no decay
    assert settings["backbone.norm.weight"] == pytest.approx((1e-5, 0.0))
    assert settings["head.proj.weight"] == pytest.approx((1e-4, 0.05))
    assert settings["head.gn.bias"] == pytest.approx((1e-4, 0.0))
    assert settings["head.query.weight"] == pytest.approx((1e-4, 0.0))  # WEIGHT_DECAY_EMBED
    assert settings["head.level_embed"] == pytest.approx((1e-4, 0.0))  # position embedding
    assert settings["frozen.weight"] is None


def test_full_model_clipping_bounds_the_global_norm():
    model = nn.Linear(10, 10)
    optimizer = build_optimizer(_clipped_sgd_cfg(), model)
    before = [p.detach().clone() for p in model.parameters()]
    (model(torch.ones(3, 10)) * 100).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    # plain SGD with lr 1: the update is the clipped gradient, one norm over all parameters
    steps = [b - p.detach() for b, p in zip(before, model.parameters())]
    total = torch.sqrt(sum((s**2).sum() for s in steps))
    assert total.item() == pytest.approx(0.01, rel=1e-4)
    scale = steps[0].norm() / grads[0].norm()
    torch.testing.assert_close(steps[1], grads[1] * scale)  # same factor for every parameter


def _random_grads(model, seed):
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=generator)


def test_adamw_runs_fused_with_the_loops_update():
    """On CPU parameters the optimizer is torch's fused AdamW: the same update, in the recipe's
    groups, as the per-parameter loop it replaces (three steps, with clipping)."""
    model = Toy()
    cfg = _full_model_clipping(_cfg(OPTIMIZER="ADAMW"), 0.5)
    assert build_optimizer(cfg, Toy(), fused=False).defaults["fused"] is False  # when asked
    optimizer = build_optimizer(cfg, model)
    assert optimizer.defaults["fused"] is True
    # the reference: torch's per-parameter loop on a copy, in the same groups, clipped by hand
    reference = copy.deepcopy(model)
    twin = dict(zip(model.parameters(), reference.parameters()))
    groups = [
        {**g, "params": [twin[p] for p in g["params"]], "fused": False, "foreach": False}
        for g in optimizer.param_groups
    ]
    loop = torch.optim.AdamW(groups)
    params = [p for p in model.parameters() if p.requires_grad]
    ref_params = [twin[p] for p in params]
    for step in range(3):
        _random_grads(model, step)
        _random_grads(reference, step)
        optimizer.step()
        torch.nn.utils.clip_grad_norm_(ref_params, 0.5, 2.0)
        loop.step()
    for p, p_ref in zip(params, ref_params):
        torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-7)


def test_clipping_under_grad_scaler_sees_unscaled_gradients():
    """AMP: a fused optimizer would take the scaled gradients and unscale them in its kernel,
    after our clipping; with clipping the scaler must unscale first, so the step equals the
    unscaled one (the clipped norm), not 1/scale of it."""
    model = nn.Linear(10, 10)
    optimizer = build_optimizer(_clipped_sgd_cfg(), model)
    assert optimizer.defaults["fused"] is True
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale((model(torch.ones(3, 10)) * 100).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    total = torch.sqrt(
        sum(((b - p.detach()) ** 2).sum() for b, p in zip(before, model.parameters()))
    )
    assert total.item() == pytest.approx(0.01, rel=1e-4)


def test_parameters_on_other_devices_keep_the_loop():
    """Fused kernels only where we run them (CPU, CUDA): a meta-device model gets the loop."""
    model = nn.Linear(4, 4, device="meta")
    optimizer = build_optimizer(_cfg(OPTIMIZER="ADAMW"), model)
    assert not optimizer.defaults["fused"]


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="LAMB"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), Toy())


def test_warmup_poly_schedule_values():
    model = nn.Linear(2, 2)
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=100,
        WARMUP_ITERS=10,
        WARMUP_FACTOR=0.1,
        WARMUP_METHOD="linear",
        POLY_LR_POWER=0.9,
        BASE_LR=1.0,
        BACKBONE_MULTIPLIER=1.0,
    )
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1)  # warmup starts at WARMUP_FACTOR
    assert lrs[5] == pytest.approx((1 - 0.05) ** 0.9 * (0.1 + 0.9 * 0.5))
    for it in (10, 50, 99):
        assert lrs[it] == pytest.approx((1 - it / 100) ** 0.9)


def test_poly_constant_ending_and_bad_values():
    assert PolyParamScheduler(1.0, constant_ending=0.2)(0.9) == pytest.approx(0.2)
    assert PolyParamScheduler(2.0)(0.5) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="POLY_LR_POWER"):
        PolyParamScheduler(0.0)
    with pytest.raises(ValueError, match="CONSTANT_ENDING"):
        PolyParamScheduler(0.9, 1.5)
