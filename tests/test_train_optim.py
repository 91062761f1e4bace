"""The optimizer kernels (kidneyseg.train.optim): fused, foreach and per-tensor steps agree."""

import pytest
import torch

from kidneyseg.train import optim
from kidneyseg.train.config import OptimizerConfig
from kidneyseg.train.optim import build_optimizer, clip_gradients, optimizer_kernel


def _train(kernel: str, cfg: OptimizerConfig, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.LeakyReLU(), torch.nn.Conv3d(4, 3, 1))
    opt = build_optimizer(net.parameters(), cfg, kernel)
    assert optimizer_kernel(opt) == kernel
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(2, 2, 6, 6, 6, generator=gen)
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        clip_gradients(net.parameters(), 0.5)
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("cfg", [OptimizerConfig(), OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-2)],
                         ids=["sgd-nesterov", "adamw"])
def test_kernels_give_the_same_update(cfg):
    ref = _train("per-tensor", cfg)
    for kernel in ("foreach", "fused"):
        got = _train(kernel, cfg)
        for a, b in zip(ref, got):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(ref, _train("per-tensor", cfg, steps=0)))
    assert moved > 0  # the steps did change the weights


def test_auto_takes_fused_on_cpu_and_falls_back(monkeypatch):
    net = torch.nn.Linear(3, 2)
    assert optimizer_kernel(build_optimizer(net.parameters(), OptimizerConfig())) == "fused"
    monkeypatch.setattr(optim, "_fused_step_works", lambda make, p0: False)  # a device without the kernel
    assert optimizer_kernel(build_optimizer(net.parameters(), OptimizerConfig())) == "foreach"
    with pytest.raises(ValueError, match="kernel must be"):
        build_optimizer(net.parameters(), OptimizerConfig(), "fast")


def test_clip_gradients_matches_torch():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(7, 5)
    a(x).square().sum().backward()
    b(x).square().sum().backward()
    n1 = clip_gradients(a.parameters(), 0.1)
    n2 = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.1, foreach=False)
    torch.testing.assert_close(n1, n2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
