"""3D U-Net: shapes, deep-supervision outputs, parameter counts of the Table 4.2 variants."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kidneyseg.model import NetworkConfig, Ops, ResidualBlock, StackedBlocks, build_unet, count_parameters
from kidneyseg.model.blocks import ConvNormAct

torch.set_num_threads(2)

TINY = dict(n_stages=3, base_features=4, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])


def conv(cin, cout, k=27, bias=True):
    return k * cin * cout + (cout if bias else 0)


def plain_tiny_count(in_ch=1, classes=3, f=(4, 8, 16)):
    """Parameters of the plain TINY network, by hand: every 3x3x3 conv k^3*cin*cout (no bias: an IN
    follows it), IN 2*c, heads with bias."""
    n = 0
    cin = in_ch
    for c in f:  # encoder: two 3x3x3 conv + IN per stage
        n += conv(cin, c, bias=False) + 2 * c + conv(c, c, bias=False) + 2 * c
        cin = c
    for s in (2, 1):  # decoder, from the bottom
        stride_vox = {2: 8, 1: 4}[s]  # transposed conv kernel = stride: (2,2,2) -> 8, (1,2,2) -> 4
        n += stride_vox * f[s] * f[s - 1] + 2 * f[s - 1]  # no bias (IN follows) + IN
        n += conv(2 * f[s - 1], f[s - 1], bias=False) + 2 * f[s - 1] + conv(f[s - 1], f[s - 1], bias=False) + 2 * f[s - 1]
        n += f[s - 1] * classes + classes  # 1x1x1 head
    return n


def test_parameter_count_by_hand():
    net = build_unet(NetworkConfig(residual=False, **TINY))
    assert count_parameters(net) == plain_tiny_count()
    res = build_unet(NetworkConfig(residual=True, **TINY))
    # residual adds 1x1x1 projections (no bias) + IN where channels or stride change:
    # encoder 1->4, 4->8 (stride), 8->16 (stride); decoder 16->8, 8->4 (concat halves channels)
    extra = sum(ci * co + 2 * co for ci, co in [(1, 4), (4, 8), (8, 16), (16, 8), (8, 4)])
    assert count_parameters(res) == plain_tiny_count() + extra


def test_table_4_2_variants_default_size():
    """PM, PM without Res, PM without Res and DS at the default 6-stage 32..320 size."""
    pm = build_unet(NetworkConfig(residual=True, deep_supervision=True))
    no_res = build_unet(NetworkConfig(residual=False, deep_supervision=True))
    no_res_ds = build_unet(NetworkConfig(residual=False, deep_supervision=False))
    # no bias in the 3x3x3 convolutions (an instance norm follows each): 2 x (32 + 64 + 128 + 256 +
    # 320 + 320) encoder + 2 x (320 + 256 + 128 + 64 + 32) decoder = 3,840 fewer than with biases
    assert count_parameters(pm) == 31_807_279 - 3_840
    assert count_parameters(no_res) == 31_197_199 - 3_840
    # the DS heads are always built, so the DS-off variant has the same tensors
    assert count_parameters(no_res_ds) == count_parameters(no_res)
    assert no_res_ds.state_dict().keys() == no_res.state_dict().keys()
    assert len(pm.decoder.heads) == 5
    assert NetworkConfig().stage_features() == [32, 64, 128, 256, 320, 320]


@pytest.mark.parametrize("residual", [True, False])
def test_output_shapes_with_and_without_deep_supervision(residual):
    cfg = NetworkConfig(n_stages=6, base_features=2, max_features=8, residual=residual,
                        strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    net = build_unet(cfg)
    x = torch.randn(2, 1, 8, 64, 64)
    outs = net.train()(x)
    assert isinstance(outs, list) and len(outs) == 5
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 64, 64), (2, 3, 8, 32, 32), (2, 3, 8, 16, 16),
                                              (2, 3, 4, 8, 8), (2, 3, 2, 4, 4)]
    assert tuple(net.eval()(x).shape) == (2, 3, 8, 64, 64)
    net.deep_supervision = False
    assert tuple(net.train()(x).shape) == (2, 3, 8, 64, 64)


def test_stage2_input_channels_and_checkpoint_loads_with_ds_on_or_off():
    on = build_unet(NetworkConfig(in_channels=3, deep_supervision=True, **TINY))
    off = build_unet(NetworkConfig(in_channels=3, deep_supervision=False, **TINY))
    off.load_state_dict(on.state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 16, 16)
    assert torch.allclose(on.eval()(x), off.eval()(x))


def test_channels_last_gives_same_output():
    net = build_unet(NetworkConfig(**TINY)).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    ref = net(x)
    cl = net.to(memory_format=torch.channels_last_3d)(x.contiguous(memory_format=torch.channels_last_3d))
    assert torch.allclose(ref, cl, atol=1e-5)


def test_blocks_take_ops_and_none_disables():
    ops = Ops(norm_op=None, nonlin=None)
    block = ConvNormAct(2, 3, 3, 1, ops)
    assert isinstance(block.norm, nn.Identity) and isinstance(block.act, nn.Identity)
    assert count_parameters(block) == 27 * 2 * 3 + 3
    ops2d = Ops(conv_op=nn.Conv2d, norm_op=nn.BatchNorm2d, norm_kwargs={}, nonlin=nn.ReLU, nonlin_kwargs={})
    rb = ResidualBlock(2, 4, 3, 2, ops2d)
    assert tuple(rb(torch.randn(1, 2, 8, 8)).shape) == (1, 4, 4, 4)
    ident = ResidualBlock(4, 4, 3, 1, Ops())
    assert isinstance(ident.shortcut, nn.Identity)
    assert len(StackedBlocks(2, 1, 4, residual=False)) == 4


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="strides must be 6 lists"):
        NetworkConfig(strides=[[1, 1, 1]])
    with pytest.raises(ValueError, match="kernel_sizes must be 3 lists of 3 odd ints"):
        NetworkConfig(kernel_sizes=[[3, 3, 3], [2, 3, 3], [3, 3, 3]], **TINY)
    with pytest.raises(ValueError, match="patch_size must be 3 multiples"):
        NetworkConfig(**TINY).check_patch_size([5, 16, 16])


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_last_instance_norm_equals_torch_and_keeps_the_layout(batch):
    """Values, gradients and state dict of torch's InstanceNorm3d; a channels-last input stays channels-last."""
    from kidneyseg.model.blocks import ChannelsLastInstanceNorm3d

    torch.manual_seed(0)
    ref = nn.InstanceNorm3d(5, affine=True)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.uniform_(-1, 1)
    ours = ChannelsLastInstanceNorm3d(5, affine=True)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    x = torch.randn(batch, 5, 4, 6, 7) * 3 + 2
    x_ref = x.clone().requires_grad_()
    x_cl = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    y_ref, y_cl = ref(x_ref), ours(x_cl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last_3d) and not y_cl.is_contiguous()
    assert torch.allclose(y_ref, y_cl, atol=1e-5)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y_cl.backward(g)
    assert torch.allclose(x_ref.grad, x_cl.grad, atol=1e-5)
    assert torch.allclose(ref.weight.grad, ours.weight.grad, atol=1e-4)
    assert torch.allclose(ref.bias.grad, ours.bias.grad, atol=1e-4)
    # bf16 input (as under autocast): statistics in float32, the output bf16 and within bf16 rounding;
    # output and input gradient bit for bit those of torch's batch norm applied sample by sample (the
    # parameter gradients up to the order their per-sample parts are summed)
    x16 = x_cl.detach().bfloat16().requires_grad_()
    y16 = ours(x16)
    assert y16.dtype == torch.bfloat16 and (y16.float() - y_ref.detach()).abs().max() < 0.05
    g16 = g.bfloat16().contiguous(memory_format=torch.channels_last_3d)
    got = torch.autograd.grad(y16, (x16, ours.weight, ours.bias), g16)
    per_sample = torch.cat([torch.nn.functional.batch_norm(s, None, None, ours.weight, ours.bias, True, 0.0, ours.eps)
                            for s in x16.split(1)])
    want = torch.autograd.grad(per_sample, (x16, ours.weight, ours.bias), g16)
    assert torch.equal(y16, per_sample) and torch.equal(got[0], want[0])
    assert torch.allclose(got[1], want[1], rtol=1e-5) and torch.allclose(got[2], want[2], rtol=1e-5)
    # channels-first input: torch's own path, identical
    assert torch.equal(ours(x), ref(x))


def test_default_ops_use_the_layout_keeping_norm():
    from kidneyseg.model.blocks import ChannelsLastInstanceNorm3d

    net = build_unet(NetworkConfig(**TINY))
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(isinstance(m, ChannelsLastInstanceNorm3d) for m in norms)


def test_a_conv_before_a_norm_has_no_bias_and_one_without_a_norm_has_one():
    normed = ConvNormAct(2, 4, 3, 1, Ops())
    plain = ConvNormAct(2, 4, 3, 1, Ops(norm_op=None))
    forced = ConvNormAct(2, 4, 3, 1, Ops(conv_kwargs={"bias": True}))
    assert normed.conv.bias is None and plain.conv.bias is not None and forced.conv.bias is not None
    block = ResidualBlock(2, 4, 3, 2, Ops())
    assert block.shortcut[0].bias is None


def test_an_unknown_conv_op_is_refused_not_taken_for_3d():
    with pytest.raises(ValueError, match="conv_op must be one of"):
        ConvNormAct(2, 4, 3, 1, Ops(conv_op=nn.Linear))
