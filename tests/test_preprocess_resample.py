"""kidneyseg.preprocess.resample: scipy-exact cubic B-spline, class-preserving labels, anisotropy."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from kidneyseg.preprocess.resample import (AxisMap, lowres_axis, new_shape, resample_image, resample_image_maps,
                                           resample_label, zoom_map)

from .conftest import tiny_label


def _scipy_zoom(x, shape, order=3):
    return ndimage.zoom(x.astype(np.float64), [n / o for n, o in zip(shape, x.shape)], order=order,
                        mode="nearest", grid_mode=True)


@pytest.mark.parametrize("shape_in,shape_out", [((9, 17, 20), (27, 13, 31)), ((30, 16, 16), (11, 16, 40)),
                                                ((2, 5, 7), (6, 5, 3))])
def test_cubic_matches_scipy_order3(shape_in, shape_out):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape_in) * 300).astype(np.float32)   # HU-like, harsh: white noise
    ref = _scipy_zoom(x, shape_out)
    out = resample_image_maps(x, [zoom_map(a, b) for a, b in zip(shape_in, shape_out)])
    assert out.shape == shape_out and out.dtype == np.float32
    assert np.abs(out - ref).max() < 5e-3            # float32 rounding on values of +-1000 HU


def test_plain_zoom_and_identity():
    x = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    out = resample_image(x, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert out.dtype == np.float32
    assert new_shape((150, 512, 512), (3.0, 0.78, 0.78), (1.0, 0.78, 0.78)) == (450, 512, 512)


def test_torch_tensor_in_tensor_out():
    x = torch.randn(6, 8, 8)
    out = resample_image(x, (3.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (18, 8, 8)
    ref = _scipy_zoom(x.numpy(), (18, 8, 8))
    assert np.abs(out.numpy() - ref).max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.randn(20, 30, 30) * 500
    cpu = resample_image(x, (2.0, 0.9, 0.9), (1.0, 0.78, 0.78))
    gpu = resample_image(x.cuda(), (2.0, 0.9, 0.9), (1.0, 0.78, 0.78))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-2)


def test_anisotropic_axis_detection():
    assert lowres_axis((3.0, 0.78, 0.78)) == 0          # 3.85 > 3
    assert lowres_axis((2.0, 0.78, 0.78)) is None       # 2.56 <= 3
    assert lowres_axis((0.8, 0.78, 0.78), (5.0, 0.78, 0.78)) == 0   # target checked too
    assert lowres_axis((5.0, 5.0, 1.0)) is None         # two coarse axes: no single low-res axis


def test_order_z_used_only_when_anisotropic():
    # a ramp plus a step along z, constant in-plane: linear along z is np.interp of the profile
    prof = np.array([0, 0, 100, 400, 400, -50, 0, 0], np.float32)
    x = np.broadcast_to(prof[:, None, None], (8, 6, 6)).copy()
    aniso = resample_image(x, (4.0, 1.0, 1.0), (1.0, 1.0, 1.0), order_z=1)
    maps = zoom_map(8, 32)
    expect = np.interp(np.clip(maps.coords(), 0, 7), np.arange(8), prof)
    np.testing.assert_allclose(aniso[:, 3, 3], expect, atol=1e-3)
    # ratio 2 <= 3: order_z is ignored, the cubic spline runs on every axis
    iso = resample_image(x, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), order_z=1)
    np.testing.assert_allclose(iso, _scipy_zoom(x, iso.shape), atol=1e-3)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_labels_keep_classes_and_volumes(mode):
    lab = tiny_label((12, 20, 24))
    out = resample_label(lab, (3.0, 0.8, 0.8), (1.0, 0.8, 0.8), mode=mode)
    assert out.dtype == np.uint8 and out.shape == (36, 20, 24)
    assert set(np.unique(out)) == set(np.unique(lab))               # nothing created, nothing lost
    for c in (1, 2):                                                # volume in mm3 kept within 1 %
        v_in, v_out = (lab == c).sum() * 3.0, (out == c).sum() * 1.0
        assert abs(v_out - v_in) / v_in < 0.01


def test_label_nearest_never_invents_values_on_random_maps():
    rng = np.random.default_rng(1)
    lab = rng.choice([0, 2], size=(7, 9, 11)).astype(np.uint8)      # class 1 absent
    for shape in [(20, 5, 30), (3, 9, 4)]:
        out = resample_label(lab, (1, 1, 1), (1, 1, 1), shape=shape)
        assert set(np.unique(out)) <= {0, 2}


def test_axis_map_general_offset():
    # output voxel j samples input coordinate 2 + 0.5 j: with order 1 on a ramp that is exact
    x = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 2, 2)).copy()
    out = resample_image_maps(x, [AxisMap(5, 2.0, 0.5), zoom_map(2, 2), zoom_map(2, 2)], order=1)
    np.testing.assert_allclose(out[:, 0, 0], [2.0, 2.5, 3.0, 3.5, 4.0])
    # a cubic spline reproduces a line away from the (edge-replicated) ends
    x = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None], (40, 2, 2)).copy()
    cub = resample_image_maps(x, [AxisMap(5, 20.0, 0.5), zoom_map(2, 2), zoom_map(2, 2)], order=3)
    np.testing.assert_allclose(cub[:, 0, 0], [20.0, 20.5, 21.0, 21.5, 22.0], atol=1e-4)


@pytest.mark.parametrize("order", [3, 1, 0])
def test_cropped_and_flipped_views_resample_like_copies(order):
    """Strided views (a body box cut from a CT) are read in place; negative strides are copied first."""
    rng = np.random.default_rng(3)
    big = (rng.normal(size=(12, 30, 34)) * 200).astype(np.float32)
    before = big.copy()
    for view in (big[2:10, 5:27, 3:30], big[:, ::-1, 4:20], big[::2, :, ::3]):
        maps = [zoom_map(n, m) for n, m in zip(view.shape, (5, 17, 9))]
        got = resample_image_maps(view, maps, order=order)
        want = resample_image_maps(np.ascontiguousarray(view), maps, order=order)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(big, before)  # the input is never written


def test_same_bytes_whatever_the_threads_and_slabs(monkeypatch):
    """Bitwise reproducible: thread count and slab size (both change how rows are blocked) do not
    change one output bit (only single-rounding elementwise ops; no reductions, no fused adds)."""
    import hashlib

    import torch

    from kidneyseg.preprocess import resample as R
    from kidneyseg.preprocess import spline

    rng = np.random.default_rng(3)
    img = (rng.standard_normal((23, 70, 61)) * 300).astype(np.float32)  # > 40 slices after padding
    saved = torch.get_num_threads()
    digests = set()
    try:
        for threads, slab in ((1, spline.SLAB_ELEMENTS), (2, spline.SLAB_ELEMENTS), (3, 5000), (2, 777)):
            torch.set_num_threads(threads)
            monkeypatch.setattr(spline, "SLAB_ELEMENTS", slab)
            out = R.resample_image(img, (3.0, 0.8, 0.8), (1.1, 0.7, 0.9))
            digests.add(hashlib.sha256(out.tobytes()).hexdigest())
    finally:
        torch.set_num_threads(saved)
    assert len(digests) == 1
