"""The body's bounding box, which stage 1 runs on at inference (kidneyseg.preprocess.body)."""

import numpy as np
import pytest

from kidneyseg.preprocess.body import body_slices


def ellipse_ct(shape=(20, 120, 140), spacing=(3.0, 2.0, 2.0), semi_yx=(30.0, 50.0), seed=0):
    """Air (-1000 +- 20 HU) with an elliptic 40 HU body of ``semi_yx`` mm around the centre."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(-1000, 20, shape).astype(np.float32)
    y = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1]
    x = (np.arange(shape[2]) - (shape[2] - 1) / 2) * spacing[2]
    inside = (y[:, None] / semi_yx[0]) ** 2 + (x[None, :] / semi_yx[1]) ** 2 <= 1
    ct[:, inside] = 40.0
    return ct, inside


def test_box_is_the_body_plus_the_margin():
    ct, inside = ellipse_ct()
    ys, xs = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    sl = body_slices(ct, (3.0, 2.0, 2.0), margin_mm=10.0)
    assert sl[0] == slice(0, 20)  # every slice holds body
    assert sl[1] == slice(ys[0] - 5, ys[-1] + 1 + 5)  # 10 mm = 5 voxels of 2 mm
    assert sl[2] == slice(xs[0] - 5, xs[-1] + 1 + 5)
    assert ct[sl].size < 0.5 * ct.size


def test_stray_bright_voxels_do_not_stretch_the_box_but_a_table_does():
    ct, _ = ellipse_ct()
    ref = body_slices(ct, (3.0, 2.0, 2.0))
    ct[3, 2, 3] = ct[10, 117, 135] = 500.0  # a marker and a noise spike in the corners
    assert body_slices(ct, (3.0, 2.0, 2.0)) == ref
    ct[:, 100:104, 20:120] = 200.0  # a table below the patient, the whole length of the scan
    sl = body_slices(ct, (3.0, 2.0, 2.0))
    assert sl[1].stop >= 104 and sl[1].start == ref[1].start


def test_margin_is_clipped_at_the_edges_and_slabs_change_nothing():
    ct = np.full((6, 30, 40), -1000.0, np.float32)
    ct[:, 0:10, 35:40] = 30.0  # touches two edges
    one = body_slices(ct, (1.0, 1.0, 1.0), margin_mm=3.0)
    assert one == (slice(0, 6), slice(0, 13), slice(32, 40))
    assert body_slices(ct, (1.0, 1.0, 1.0), margin_mm=3.0, slab_voxels=1) == one


def test_all_air_gives_none_and_bad_arguments_are_refused():
    assert body_slices(np.full((4, 5, 6), -1000.0), (1, 1, 1)) is None
    with pytest.raises(ValueError, match="z, y, x"):
        body_slices(np.zeros((4, 5)), (1, 1))
    with pytest.raises(ValueError, match="margin_mm"):
        body_slices(np.zeros((4, 5, 6)), (1, 1, 1), margin_mm=-1)
