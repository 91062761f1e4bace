"""kidneyseg.measure.components: sizes, kidney counts and selections against direct counting."""

import numpy as np

from kidneyseg.measure.components import component_sizes, components, kidney_voxels, select


def test_counts_and_selection_match_direct_counting():
    rng = np.random.default_rng(3)
    mask = rng.random((20, 24, 28)) < 0.05
    kidney = mask & (rng.random(mask.shape) < 0.5)
    comp, n = components(mask)
    assert n > 10
    sizes, kid = component_sizes(comp, n), kidney_voxels(comp, n, kidney)
    assert sizes.shape == kid.shape == (n + 1,) and sizes[0] == kid[0] == 0
    for c in range(1, n + 1):
        assert sizes[c] == np.count_nonzero(comp == c)
        assert kid[c] == np.count_nonzero(kidney & (comp == c))
    ids = [1, n, n // 2]
    np.testing.assert_array_equal(select(comp, n, ids), np.isin(comp, ids))
    assert not select(comp, n, []).any()
    assert not select(comp, n, [0]).any()  # the background is never selected


def test_counting_in_slices_gives_the_same_counts(monkeypatch):
    import kidneyseg.measure.components as mc
    rng = np.random.default_rng(5)
    mask = rng.random((30, 40, 50)) < 0.4  # mostly one big component, many small ones
    kidney = mask & (rng.random(mask.shape) < 0.5)
    comp, n = components(mask)
    whole = component_sizes(comp, n), kidney_voxels(comp, n, kidney)
    monkeypatch.setattr(mc, "_COUNT_CHUNK", 997)  # 61 slices, none aligned with a row
    np.testing.assert_array_equal(component_sizes(comp, n), whole[0])
    np.testing.assert_array_equal(kidney_voxels(comp, n, kidney), whole[1])
    assert whole[0].sum() == np.count_nonzero(mask) and whole[1].sum() == np.count_nonzero(kidney)
