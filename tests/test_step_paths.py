"""Issue 17's step paths give the results of the code before them (on CPU), with fewer ops.

LoRA in the autocast dtype from one cast per step, channels_last, fused/foreach optimizers, the
per-caption text-state cache and the lr logged with its step; ``bench/step_ops.py``'s counts.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from test_train_support import make_config, tiny_dataset, tiny_model

import trainer.run as run_mod
from trainer import events as ev
from trainer.lora import LoRANetwork, read_lora_file
from trainer.optim import build_optimizer, build_scheduler
from trainer.step import NoiseSchedule, StepOptions, TrainStep
from trainer.text_cache import TextStateCache, captions_are_fixed

ROOT = Path(__file__).resolve().parent.parent


def _unet(dtype: torch.dtype = torch.float32):
    from diffusers import UNet2DConditionModel

    from trainer.tiny import tiny_unet_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config()).to(dtype)
    unet.requires_grad_(False)
    return unet


def _schedule() -> NoiseSchedule:
    from diffusers import DDPMScheduler

    from trainer.models import sd1_scheduler_config

    return NoiseSchedule.from_scheduler(DDPMScheduler(**sd1_scheduler_config("ddpm")), "cpu")


def _net(unet) -> LoRANetwork:
    net = LoRANetwork(unet, None, dim=4, alpha=2, train_text_encoder=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for lora in net.loras:  # a trained-looking LoRA: up != 0, so every path matters
            lora.lora_up.weight.normal_(0, 0.05)
    return net


def _inputs(unet, dtype: torch.dtype, batch: int = 2):
    g = torch.Generator().manual_seed(2)
    lat = torch.randn(batch, 4, 8, 8, generator=g).to(dtype)
    cond = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g).to(dtype)
    return lat, cond


def _grads(options: StepOptions, micro_batches: int = 1, checkpointing: bool = False):
    """Loss and fp32 LoRA gradients of the tiny U-Net in bf16 under CPU autocast (as a bf16 GPU run)."""
    unet = _unet(torch.bfloat16)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
    net = _net(unet)
    opt = build_optimizer("AdamW", net.param_groups(1e-3, None))
    step = TrainStep(unet, net, opt, build_scheduler("constant", opt, total_steps=4), None, _schedule(),
                     options=options, autocast_dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3),
                     accumulation=micro_batches)
    lat, cond = _inputs(unet, torch.bfloat16)
    losses = [float(step.forward_backward(lat, cond).detach()) for _ in range(micro_batches)]
    grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in net.parameters())
    net.remove()
    return losses, grads


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    flat_a = torch.cat([a[k].reshape(-1) for k in a])
    flat_b = torch.cat([b[k].reshape(-1) for k in a])
    # bf16 compute: the two paths round differently, so compare the whole gradient's direction/size.
    cos = torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0)
    assert cos > 0.995, cos
    assert abs(flat_a.norm() / flat_b.norm() - 1) < 0.02


@pytest.mark.parametrize(("micro_batches", "checkpointing"), [(1, False), (2, False), (1, True)])
def test_lora_cast_once_gives_the_per_call_autocast_results(micro_batches: int, checkpointing: bool) -> None:
    base_losses, base = _grads(StepOptions.baseline(), micro_batches)
    new_losses, new = _grads(StepOptions(), micro_batches, checkpointing)
    assert new_losses == pytest.approx(base_losses, rel=2e-2)
    _close(new, base)


def test_flattened_weights_save_load_and_move() -> None:
    unet = _unet(torch.bfloat16)
    net = _net(unet)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with net.compute_weights(torch.bfloat16):
        pass
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    shared = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert len(shared) == 1  # one buffer: one cast per step
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = net.save(Path(tmp) / "x.safetensors", dtype=torch.float32)  # shared storage must not fail
        saved = read_lora_file(path)[0]
        assert all(torch.equal(saved[k], before[k]) for k in before)
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        net.load_weights(path)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.to(torch.float64)  # replaces the storages: the next step flattens again
    with net.compute_weights(torch.bfloat16):
        pass
    assert len({p.untyped_storage().data_ptr() for p in net.parameters()}) == 1
    assert all(p.dtype == torch.float64 for p in net.parameters())
    net.remove()


def test_step_ops_bench_counts_fewer_casts_and_ops_and_no_host_syncs() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import step_ops
    finally:
        sys.path.remove(str(ROOT / "bench"))
    args = step_ops.build_parser().parse_args(["--model", "tiny", "--lora-dim", "4", "--no-graph-breaks"])
    unet = step_ops.make_unet("tiny", torch.bfloat16)
    new = step_ops.count(unet, StepOptions(), args)
    base = step_ops.count(unet, StepOptions.baseline(), args)
    assert base["casts_per_step"] > 500  # autocast casts every LoRA weight and input per call
    assert new["casts_per_step"] <= 0.1 * base["casts_per_step"]
    assert new["ops_per_step"] < 0.85 * base["ops_per_step"]
    assert new["lora_ops_per_step"] < 0.7 * base["lora_ops_per_step"]
    assert new["host_syncs_per_step"] == 0 and base["host_syncs_per_step"] == 0


def test_foreach_lion_is_lion_pytorch() -> None:
    if importlib.util.find_spec("lion_pytorch") is None:
        pytest.skip("lion-pytorch not installed")
    import lion_pytorch

    from trainer.lion import ForeachLion

    def train(make):
        torch.manual_seed(0)
        lin = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
        opt = make(lin.parameters())
        for i in range(4):
            torch.manual_seed(10 + i)
            lin(torch.randn(6, 5)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        return [p.detach().clone() for p in lin.parameters()], opt

    kw = {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1}
    mine, opt = train(lambda ps: ForeachLion(ps, **kw))
    ref, ref_opt = train(lambda ps: lion_pytorch.Lion(ps, **kw))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(mine, ref, strict=True))
    assert type(build_optimizer("Lion", [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-4}])) is ForeachLion
    opt.load_state_dict(ref_opt.state_dict())  # a state saved with lion-pytorch resumes


def test_optimizers_are_fused_or_foreach_on_cpu_unless_asked_for_the_old_way() -> None:
    def params():
        return [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1e-3}]

    assert build_optimizer("AdamW", params()).defaults["fused"] is True
    assert not build_optimizer("AdamW", params(), prefer_fused=False).defaults["fused"]
    assert build_optimizer("AdamW", params(), {"foreach": False}).defaults["fused"] in (None, False)
    assert build_optimizer("SGD", params()).defaults["foreach"] is True


def test_text_state_cache_encodes_each_caption_once() -> None:
    seen: list[list[str]] = []

    def encode(caps: list[str]) -> torch.Tensor:
        seen.append(list(caps))
        return torch.stack([torch.full((3, 2), float(len(c))) for c in caps])

    cache = TextStateCache(encode, enabled=True)
    a = cache(["ab", "abc", "ab"])
    b = cache(["abc", "ab"])
    assert seen == [["ab", "abc"]] and (cache.hits, cache.misses, len(cache)) == (3, 2, 2)
    assert torch.equal(a, encode(["ab", "abc", "ab"])) and torch.equal(b, encode(["abc", "ab"]))
    off = TextStateCache(encode, enabled=False)
    off(["ab"])
    off(["ab"])
    assert len(off) == 0 and seen[-2:] == [["ab"], ["ab"]]
    full = TextStateCache(encode, enabled=True, max_entries=1)
    assert torch.equal(full(["ab", "abc"]), encode(["ab", "abc"])) and len(full) == 0

    from trainer.data import CaptionOptions

    assert captions_are_fixed(CaptionOptions())
    assert not captions_are_fixed(CaptionOptions(shuffle_caption=True))
    assert not captions_are_fixed(CaptionOptions(caption_tag_dropout_rate=0.1))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paths")
    return {"model": tiny_model(root), "data": tiny_dataset(root / "data", n=4, repeats=1)}


def _losses(cfg) -> tuple[list[float], list[dict]]:
    events: list = []
    result = run_mod.TrainingRun(cfg, on_event=events.append).run()
    assert isinstance(result, ev.Finished), result
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    return [e.loss for e in steps], [e.lrs for e in steps]


def test_training_with_every_change_gives_the_loss_curve_of_before(env, tmp_path: Path, monkeypatch) -> None:
    # Frozen text encoder + fixed captions: the text-state cache is on too.
    cfg = make_config(env["model"], env["data"], tmp_path / "new", network={"train_unet_only": True},
                      dataset={"shuffle_caption": False},
                      optimizer={"max_grad_norm": 1.0, "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 4})
    caches: list[TextStateCache] = []
    real_cache = run_mod.TextStateCache

    def recording(*a, **k):
        caches.append(real_cache(*a, **k))
        return caches[-1]

    monkeypatch.setattr(run_mod, "TextStateCache", recording)
    new, lrs = _losses(cfg)
    assert caches[0].enabled and caches[0].hits > 0 and len(caches[0]) == 4
    # The lr each step USED (warmup: 0, 1/4, 2/4, 3/4 of 1e-3), not the next step's.
    assert [round(x["unet"], 9) for x in lrs] == [0.0, 0.00025, 0.0005, 0.00075]

    monkeypatch.setattr(run_mod, "StepOptions", lambda compile=False: StepOptions.baseline())
    monkeypatch.setattr(run_mod, "build_optimizer", partial(build_optimizer, prefer_fused=False))
    monkeypatch.setattr(run_mod, "captions_are_fixed", lambda opts: False)
    old, _ = _losses(cfg.with_value("output.output_dir", str(tmp_path / "old")))
    assert len(new) == len(old) == 4
    assert new == pytest.approx(old, rel=1e-4)


@pytest.mark.slow
def test_compiled_unet_has_no_graph_break_and_the_eager_loss() -> None:
    def run(options: StepOptions) -> list[float]:
        unet = _unet()
        net = _net(unet)
        opt = build_optimizer("AdamW", net.param_groups(1e-3, None))
        step = TrainStep(unet, net, opt, build_scheduler("constant", opt, total_steps=4), None, _schedule(),
                         options=options, max_grad_norm=1.0, generator=torch.Generator().manual_seed(3))
        lat, cond = _inputs(unet, torch.float32)
        out = [float(step.run(lat, cond).detach()) for _ in range(2)]
        net.remove()
        return out

    torch._dynamo.reset()
    try:
        # fullgraph=True: a graph break would raise. aot_eager traces forward and backward exactly as
        # inductor does but skips code generation, which takes many minutes on a small CPU.
        compiled = run(StepOptions(compile=True, compile_backend="aot_eager"))
    finally:
        torch._dynamo.reset()
    assert compiled == pytest.approx(run(StepOptions()), rel=1e-4)
