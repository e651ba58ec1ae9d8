"""augment_explorer (notebook 03): the views of a mark, drawn by the widget and by a direct call."""
import random

import pytest
import torch
from PIL import Image

from tmr_lib.widgets import AUGMENT_MODES, augment_explorer, augmentation_figure, augmentation_views


def _mark(size=48):
    img = Image.new("RGB", (size + 20, size), "white")  # white margin on the right: trimmed away
    img.paste((20, 60, 160), (4, 8, size - 4, size - 8))
    return img


def test_views_are_seeded_and_leave_the_global_random_state_alone():
    random.seed(123)
    torch.manual_seed(123)
    expected = (random.random(), torch.rand(1))
    random.seed(123)
    torch.manual_seed(123)
    a = augmentation_views(_mark(), "strong", n=4, seed=1, size=40)
    assert (random.random(), torch.rand(1)) == expected  # nothing consumed from the notebook's generators
    assert a.shape == (4, 3, 40, 40) and a.dtype == torch.uint8
    assert torch.equal(a, augmentation_views(_mark(), "strong", n=4, seed=1, size=40))
    assert not torch.equal(a, augmentation_views(_mark(), "strong", n=4, seed=2, size=40))
    with pytest.raises(ValueError, match="mode"):
        augmentation_views(_mark(), "vertical-flip")


def test_test_time_views_zoom_out_on_white():
    views = augmentation_views(torch.zeros(3, 40, 40, dtype=torch.uint8), "test-time", n=4, size=40)
    assert views.shape == (4, 3, 40, 40)
    assert views[0].max() == 0  # scale 1.0: unchanged
    assert (views[1][:, :1, :] == 255).all()  # scale 0.9: a white border appears
    assert views[1].float().mean() < views[3].float().mean()  # smaller scale, more paper


def test_figure_shows_the_original_and_every_view():
    for mode in AUGMENT_MODES:
        fig = augmentation_figure(_mark(), mode, n=3, size=40, title="テスト")
        assert len(fig.axes) == 4 and "テスト" in fig._suptitle.get_text()


def test_explorer_draws_on_build_on_every_change_and_on_direct_calls():
    ex = augment_explorer([_mark(), _mark(30)], ["first 一", "second 二"], size=40, n=3)
    assert ex.draws == 1 and ex.image.value[:4] == b"\x89PNG"  # drawn once, without a live kernel
    ex.mode.value = "weak"  # a user clicks: the picture follows
    assert ex.draws == 2
    png = ex.image.value
    ex.seed.value = 7
    assert ex.draws == 3 and ex.image.value != png
    fig = ex.redraw(mark=1, mode="pseudo-logo", seed=4)  # several changes, one drawing
    assert ex.draws == 4 and (ex.picker.value, ex.mode.value, ex.seed.value) == (1, "pseudo-logo", 4)
    assert "second 二" in fig._suptitle.get_text() and len(fig.axes) == 4
    ex.again.click()  # "new draw": the next seed
    assert ex.seed.value == 5 and ex.draws == 5
    with pytest.raises(ValueError, match="mode"):
        ex.redraw(mode="nope")
    assert ex.widget.children  # an ipywidgets box to display


def test_explorer_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        augment_explorer([])
    with pytest.raises(ValueError, match="titles"):
        augment_explorer([_mark()], ["a", "b"])
