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
