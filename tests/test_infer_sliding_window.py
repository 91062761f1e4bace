"""kidneyseg.infer.sliding_window against a brute-force reference with tiny fixed-conv networks."""

import itertools

import numpy as np
import pytest
import torch

from kidneyseg.infer.memory import accumulator_bytes, choose_stitch_device
from kidneyseg.infer.sliding_window import (check_overlap, gaussian_weights, sliding_window_predict,
                                            window_starts)

torch.set_num_threads(2)


def fixed_conv(k=3, cin=1, classes=3, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Conv3d(cin, classes, k, padding=k // 2)
    return net.eval()


def brute_force(image, net, patch, overlap, flips=((),)):
    """Direct reading of the definition: every window, softmax, Gaussian weight, normalized sum."""
    c, *shape = image.shape
    g = gaussian_weights(patch).double()
    acc = torch.zeros((3, *shape), dtype=torch.float64)
    wsum = torch.zeros(shape, dtype=torch.float64)
    for z, y, x in itertools.product(*[window_starts(s, p, overlap) for s, p in zip(shape, patch)]):
        sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        win = image[(slice(None), *sl)][None]
        probs = []
        for axes in flips:
            dims = [a + 2 for a in axes]
            out = net(torch.flip(win, dims) if axes else win)
            p = torch.softmax(out, 1)
            probs.append(torch.flip(p, dims) if axes else p)
        p = torch.stack(probs).mean(0)[0].double()
        acc[(slice(None), *sl)] += p * g
        wsum[sl] += g
    return acc / wsum


@torch.no_grad()
@pytest.mark.parametrize("overlap,batch", [(0.5, 1), (0.25, 3), (0.0, 2)])
def test_matches_brute_force(overlap, batch):
    torch.manual_seed(1)
    img = torch.randn(1, 13, 21, 18)
    net = fixed_conv()
    patch = (8, 12, 10)
    ref = brute_force(img, net, patch, overlap)
    res = sliding_window_predict(img, net, patch, overlap=overlap, batch_size=batch, return_probs=True)
    assert res.labels.dtype == np.uint8 and res.labels.shape == (13, 21, 18)
    np.testing.assert_allclose(res.probs.astype(np.float32), ref.numpy(), atol=2e-3)
    np.testing.assert_array_equal(res.labels, ref.argmax(0).numpy())  # ties are measure-zero here
    n = np.prod([len(window_starts(s, p, overlap)) for s, p in zip((13, 21, 18), patch)])
    assert res.n_windows == n


@torch.no_grad()
def test_mirror_tta_matches_brute_force_and_pointwise_net_is_window_free():
    torch.manual_seed(2)
    img = torch.randn(2, 10, 14, 12)
    net = fixed_conv(cin=2)
    patch = (8, 8, 8)
    flips = [c for r in range(4) for c in itertools.combinations((0, 1, 2), r)]
    ref = brute_force(img, net, patch, 0.5, flips)
    res = sliding_window_predict(img, net, patch, overlap=0.5, mirror_axes=(0, 1, 2), return_probs=True)
    np.testing.assert_allclose(res.probs.astype(np.float32), ref.numpy(), atol=2e-3)
    # a 1x1x1 conv sees no context: windows and weights must not change its softmax
    point = fixed_conv(k=1, cin=2)
    full = torch.softmax(point(img[None]), 1)[0]
    res = sliding_window_predict(img, point, patch, overlap=0.3, return_probs=True)
    np.testing.assert_allclose(res.probs.astype(np.float32), full.numpy(), atol=1e-3)


@torch.no_grad()
def test_volume_smaller_than_patch_is_padded_and_cropped_back():
    img = torch.randn(1, 5, 30, 7)
    point = fixed_conv(k=1)
    res = sliding_window_predict(img.numpy(), point, (8, 16, 16), overlap=0.5, return_probs=True)
    assert res.labels.shape == (5, 30, 7)
    np.testing.assert_allclose(res.probs.astype(np.float32), torch.softmax(point(img[None]), 1)[0].numpy(),
                               atol=1e-3)
    # deep-supervision style list output: the first entry is used
    res2 = sliding_window_predict(img, lambda t: [point(t), None], (8, 16, 16))
    np.testing.assert_array_equal(res2.labels, res.labels)


def test_argument_errors():
    net = fixed_conv()
    img = torch.zeros(1, 8, 8, 8)
    for bad in (1.0, -0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="overlap must be in \\[0, 1\\)"):
            check_overlap(bad)
    with pytest.raises(ValueError, match="image must be"):
        sliding_window_predict(torch.zeros(8, 8, 8), net, (4, 4, 4))
    with pytest.raises(ValueError, match="mirror_axes"):
        sliding_window_predict(img, net, (4, 4, 4), mirror_axes=(3,))
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_predict(img, net, (4, 4))


def test_memory_estimate_and_device_choice(monkeypatch):
    assert accumulator_bytes((10, 10, 10), 3) == 1000 * 17
    assert accumulator_bytes((10, 10, 10), 3, return_probs=True) == 1000 * 23
    assert choose_stitch_device("cpu", 1000).type == "cpu"
    from kidneyseg.errors import KidneysegError
    with pytest.raises(KidneysegError, match="GiB of RAM is free"):
        choose_stitch_device("cpu", 1 << 50)
    monkeypatch.setenv("KIDNEYSEG_RAM_BUDGET_GIB", "1")  # the CPU's room is the RAM budget
    assert choose_stitch_device("cpu", 2**29).type == "cpu"
    with pytest.raises(KidneysegError, match="needs about 2.00 GiB but only 1.00 GiB of RAM is free"):
        choose_stitch_device("cpu", 2**31)


def test_small_volume_is_padded_with_each_channels_minimum_like_the_sampler():
    import torch

    from kidneyseg.infer.sliding_window import sliding_window_predict

    seen = []

    def net(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 3, *x.shape[2:])

    image = torch.full((2, 4, 6, 6), 5.0)
    image[0, 0, 0, 0] = -3.0  # the CT channel's minimum (air after normalisation)
    image[1] = 1.0
    image[1, 0, 0, 0] = 0.0
    sliding_window_predict(image, net, (8, 8, 8), overlap=0.5)
    window = seen[0][0]
    assert window.shape == (2, 8, 8, 8)
    assert float(window[0, 0, 0, 0]) == -3.0 and float(window[1, 0, 0, 0]) == 0.0  # padding corner
    assert float(window[0, 4, 4, 4]) == 5.0  # inside the volume


class _Recorder(torch.nn.Module):
    """A fixed conv that records the dtype and layout it ran in."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        out = self.net(x)
        self.seen.append((out.dtype, x.is_contiguous(memory_format=torch.channels_last_3d)))
        return out


def test_bf16_runs_only_the_network_in_bf16_and_accumulates_in_fp32():
    from kidneyseg.runtime import Runtime

    torch.manual_seed(0)
    image = torch.randn(1, 10, 20, 18)
    patch, overlap = (8, 8, 8), 0.5
    rec = _Recorder(fixed_conv())
    rt = Runtime(torch.device("cpu"), "bf16", True)
    res = sliding_window_predict(image, rt.prepare_model(rec), patch, overlap, device=rt, return_probs=True)
    assert rec.seen and all(s == (torch.bfloat16, True) for s in rec.seen)
    # reference: the same bf16 logits, everything after them in float64
    net = rec.net

    def bf16_net(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x.contiguous(memory_format=torch.channels_last_3d)).float()

    with torch.no_grad():
        want = brute_force(image, bf16_net, patch, overlap)
    assert np.abs(res.probs.astype(np.float64) - want.numpy()).max() < 2e-3  # fp16 output rounding
    assert (res.labels == want.argmax(0).numpy()).mean() > 0.999


def test_predictions_do_not_depend_on_the_thread_count():
    """The runtime's prediction settings (auto precision, channels-first on the CPU): the same bytes
    with 1, 2 and 3 threads, also in bf16 (a channels-last instance norm would break this)."""
    from kidneyseg.model.unet import NetworkConfig, build_unet
    from kidneyseg.runtime import resolve_runtime

    torch.manual_seed(0)
    image = torch.randn(1, 20, 40, 40)
    saved = torch.get_num_threads()
    for precision in ("fp32", "auto"):
        rt = resolve_runtime("cpu", precision)
        net = rt.prepare_model(build_unet(NetworkConfig(n_stages=3, base_features=8,
                                                        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]]))).eval()
        probs = []
        try:
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                probs.append(sliding_window_predict(image, net, (16, 32, 32), 0.5, device=rt, return_probs=True).probs)
        finally:
            torch.set_num_threads(saved)
        assert all(np.array_equal(probs[0], p) for p in probs[1:]), precision
