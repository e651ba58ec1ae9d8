"""The notebooks' small pictures: show_marks draws anything a notebook holds; plot_embedding_2d draws a circle."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image

from tmr_lib.viz import as_image_array, plot_embedding_2d, show_marks


def test_as_image_array_takes_paths_images_arrays_and_tensors(tmp_path):
    img = Image.new("RGB", (60, 30), "white")
    img.paste((0, 0, 0), (10, 5, 40, 25))  # ink in the middle of a wide white margin
    path = tmp_path / "mark.png"
    img.save(path)
    from_path = as_image_array(path, size=32)
    assert from_path.shape == (32, 32, 3) and from_path.dtype == np.uint8
    assert from_path.min() == 0  # trimmed: the ink fills the square's width
    assert as_image_array(img).shape == (30, 60, 3)
    chw = torch.zeros(3, 8, 8, dtype=torch.uint8)
    assert as_image_array(chw).shape == (8, 8, 3)
    assert as_image_array(np.ones((1, 8, 8), np.float32)).shape == (8, 8)
    assert as_image_array(np.full((5, 5), 2.0)).max() == 1.0  # floats clipped to 0-1
    with pytest.raises(ValueError, match="shape"):
        as_image_array(np.zeros(5))


def test_show_marks_draws_one_panel_per_mark_with_titles_and_frames():
    marks = [np.zeros((8, 8, 3), np.uint8), torch.full((3, 8, 8), 255, dtype=torch.uint8), Image.new("RGB", (9, 9))]
    fig = show_marks(marks, ["query 出願", "cite 引用", None], frame_colours=[None, "#2ca02c", None])
    axes = fig.axes
    assert len(axes) == 3
    assert [a.get_title() for a in axes] == ["query 出願", "cite 引用", ""]
    assert matplotlib.colors.to_hex(axes[1].spines["top"].get_edgecolor()) == "#2ca02c"
    grid = show_marks(marks * 3, ncols=4)
    assert sum(a.get_visible() and a.axison for a in grid.axes) == 9 and len(grid.axes) == 12
    with pytest.raises(ValueError, match="titles"):
        show_marks(marks, ["only one"])
    with pytest.raises(ValueError):
        show_marks([])


def test_show_marks_saves_a_png(tmp_path):
    out = tmp_path / "sheet.png"
    show_marks([np.zeros((8, 8), np.uint8)], ["a"], out=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_embedding_2d_draws_points_thumbnails_and_centres():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 2))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat([0, 1, 2], 10)
    fig, ax = plt.subplots()
    out = plot_embedding_2d(emb, labels, ax=ax, title="埋め込み", thumbnails={0: np.zeros((8, 8), np.uint8)},
                            centres=np.eye(3, 2))
    assert out is fig and ax.get_title() == "埋め込み"
    assert len(ax.collections) == 3  # one scatter per label
    assert sum(len(c.get_offsets()) for c in ax.collections) == 30
    assert len(ax.artists) == 1  # the thumbnail
    assert len(ax.texts) == 3  # one arrow (annotation) per class centre
    assert plot_embedding_2d(torch.tensor(emb), torch.tensor(labels)).axes  # tensors and a figure of its own
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_embedding_2d(np.zeros((4, 3)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="labels"):
        plot_embedding_2d(emb, labels[:5])
    plt.close("all")


def test_transparent_images_are_drawn_on_white_paper():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent
    assert as_image_array(rgba).min() == 255
