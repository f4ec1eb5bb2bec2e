"""Post-processing on hand-made label stacks."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.segmentation.postprocess import largest_component, postprocess_labels

from seg_doubles import disc_heart


def test_largest_component_keeps_biggest_3d_blob():
    m = np.zeros((3, 10, 10), bool)
    m[0:2, 1:4, 1:4] = True  # 18 voxels, spans two slices
    m[2, 7:9, 7:9] = True  # 4 voxels
    m[0, 8, 0] = True
    out = largest_component(m)
    assert out.sum() == 18 and out[0:2, 1:4, 1:4].all()
    assert not largest_component(np.zeros((2, 3, 3), bool)).any()


def test_diagonal_neighbours_across_slices_are_connected():
    m = np.zeros((2, 5, 5), bool)
    m[0, 1, 1] = m[1, 2, 2] = True  # touch only by a corner
    m[0, 4, 4] = True
    m[1, 4, 4] = True  # a 2-voxel blob elsewhere
    out = largest_component(m)
    assert out.sum() == 2


def test_postprocess_removes_islands_and_fills_holes():
    lab = np.stack([disc_heart(40, (20, 22), 6, 2, 10) for _ in range(3)])
    clean = lab.copy()
    lab[1, 2:4, 2:4] = 3  # a stray LV island far away
    lab[1, 20, 22] = 2  # a myocardium speck inside the LV cavity -> LV
    lab[2, 5, 35] = 1  # an RV island
    out = postprocess_labels(lab)
    np.testing.assert_array_equal(out, clean)
    assert out.dtype == np.uint8


def test_enclosed_background_takes_the_nearest_label_and_myo_ring_is_kept():
    lab = np.stack([disc_heart(40, (20, 20), 6, 3, 12)])
    assert (lab[0] == 3).sum() > 0
    holed = lab.copy()
    assert lab[0, 20, 27] == 2  # inside the ring 6 <= r < 9, all 4-neighbours myocardium
    holed[0, 20, 27] = 0  # an enclosed background pixel
    out = postprocess_labels(holed)
    assert out[0, 20, 27] == 2  # takes the nearest label
    # the LV cavity is the myocardium's hole and must stay LV
    assert (out == 3).sum() == (lab == 3).sum()
    np.testing.assert_array_equal(postprocess_labels(lab[0]), lab[0])  # 2D input accepted


def test_rv_next_to_the_septum_wins_over_a_larger_false_rv():
    lab = np.stack([disc_heart(60, (35, 35), 6, 2, 10) for _ in range(3)])
    true_rv = (lab == 1).sum()
    lab[:, 0:12, 0:40] = 1  # a larger false "RV" far from the heart (chest wall)
    assert (lab[:, 0:12, 0:40] == 1).sum() > true_rv
    out = postprocess_labels(lab)
    assert (out[:, 0:12, 0:40] == 1).sum() == 0
    assert (out == 1).sum() == true_rv
    # myocardium: the ring around the LV is kept, a detached larger blob is not
    lab2 = np.stack([disc_heart(60, (35, 35), 6, 2, 10) for _ in range(3)])
    lab2[:, 50:60, 0:60] = 2
    out2 = postprocess_labels(lab2)
    assert (out2[:, 50:60] == 2).sum() == 0 and (out2 == 2).sum() == (np.stack([disc_heart(60, (35, 35), 6, 2, 10)] * 3) == 2).sum()


@pytest.mark.parametrize("seed", range(6))
def test_cleaning_on_the_bounding_box_equals_the_whole_field_of_view(seed):
    """Reference: the same cleaning run on the whole array (blobs, holes, strays; some touching the border)."""
    from scipy import ndimage

    from cmrprior.segmentation.postprocess import _clean, postprocess_labels

    rng = np.random.default_rng(seed)
    lab = np.zeros((3, 48, 56), np.uint8)
    noise = ndimage.gaussian_filter(rng.random((3, 48, 56)), (0, 2, 2))
    lab[noise > np.quantile(noise, 0.7)] = 3
    lab[(noise > np.quantile(noise, 0.6)) & (lab == 0)] = 2
    lab[(noise > np.quantile(noise, 0.5)) & (lab == 0) & (rng.random(lab.shape) > 0.3)] = 1
    window = np.zeros(lab.shape, bool)
    window[:, 12 + seed : 36, 15 : 44 - seed] = True  # a heart-sized region of a larger field of view
    lab[~window] = 0
    if seed % 2 == 0:
        lab[:, 0, 10:20] = 1  # a stray on the image border (the box then reaches it)
    np.testing.assert_array_equal(postprocess_labels(lab), _clean(lab.copy(), (1, 2, 3)))
