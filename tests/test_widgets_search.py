"""tmr_lib.widgets.search_explorer: the widget builds, draws a query's top-k with scores, frames the
correct cites, and searches an uploaded image (a tiny pixel "encoder" keeps it to seconds)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.colors import to_hex

from tmr_lib.embed import embed_images
from tmr_lib.search import build_index

GREEN = "#2ca02c"


class PixelEncoder(torch.nn.Module):
    """A parameter-free stand-in for an encoder: 4x4 average colours, unit norm (48-d)."""

    image_size = 32
    embed_dim = 48

    def forward(self, x):
        return F.normalize(F.adaptive_avg_pool2d(x, 4).flatten(1), dim=1)


@pytest.fixture(scope="module")
def setup(ci_competition):
    from tmr_lib.pipeline import pixel_embeddings  # noqa: F401 - the kit imports cleanly
    from tmr_lib.augment import pil_to_uint8
    from tmr_lib.preprocess import load_mark

    comp = ci_competition
    model = PixelEncoder()

    def embed(paths):
        x = torch.stack([pil_to_uint8(load_mark(p, 32)) for p in paths])
        return embed_images(model, x, batch_size=128, progress=False)

    cite_emb = embed(list(comp.cite["path"]))
    test_emb = embed(list(comp.test["path"][:12]))
    index = build_index(cite_emb, ids=comp.cite["gid"].to_numpy(), kind="flat", use_gpu=False)
    return comp, model, index, test_emb


def _explorer(setup, **kw):
    from tmr_lib.widgets import search_explorer

    comp, model, index, test_emb = setup
    return search_explorer(comp, index, test_emb, model=model, queries=comp.test.iloc[:12], **kw)


def test_builds_the_widget_and_draws_query_with_scores(setup):
    ex = _explorer(setup)
    import ipywidgets as widgets

    assert isinstance(ex.widget, widgets.VBox)
    assert not ex.upload.disabled and ex.picker.max == 11
    fig = ex.redraw(4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 + 20  # the query and its top-20
    scores = [float(ax.get_title().split()[-1]) for ax in fig.axes[1:]]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    assert [ax.get_title().split()[0] for ax in fig.axes[1:]] == [f"#{r}" for r in range(1, 21)]
    assert ex.current == 4 and ex.last["gid"] == str(setup[0].test["gid"].iloc[4])
    assert ex.last["ids"] == ex.search(4)[0] and len(set(ex.last["ids"])) == 20


def test_correct_cites_are_framed_green(setup):
    comp = setup[0]
    probe = _explorer(setup)
    ids, _ = probe.search(2)
    gid = str(comp.test["gid"].iloc[2])
    ex = _explorer(setup, answers={gid: [ids[2], "not-a-cite"]})  # the 3rd proposal is "correct"
    fig = ex.redraw(2)
    colours = [to_hex(ax.spines["left"].get_edgecolor()) for ax in fig.axes[1:]]
    assert colours[2] == GREEN and colours.count(GREEN) == 1
    assert ex.last["hits"] == [3]
    assert "hit @3" in fig.axes[0].get_title()
    ex.redraw(5)  # a query without answers: nothing framed
    assert ex.last["hits"] == []


def test_picker_and_buttons_redraw(setup):
    ex = _explorer(setup)
    ex.picker.value = 7
    assert ex.current == 7 and ex.last["gid"] == str(setup[0].test["gid"].iloc[7])
    ex.next_button.click()
    assert ex.current == 8
    ex.prev_button.click()
    ex.prev_button.click()
    assert ex.current == 6
    assert "gid" in ex.status.value
    shown = ex.output.outputs  # what the live widget displays: the picture of the current query
    assert len(shown) == 1 and shown[0]["data"]["image/png"]


def test_uploaded_image_finds_itself(setup, tmp_path):
    comp = setup[0]
    ex = _explorer(setup)
    path = comp.cite["path"].iloc[10]
    fig = ex.search_image(open(path, "rb").read(), "my mark")
    assert isinstance(fig, Figure)
    assert ex.last["ids"][0] == str(comp.cite["gid"].iloc[10]) and ex.last["scores"][0] > 0.99
    assert ex.last["hits"] == []  # nothing expected, nothing framed
    fig = ex.search_image(path, correct=[comp.cite["gid"].iloc[10]])  # a file path; the expected cite framed
    assert ex.last["hits"] == [1] and to_hex(fig.axes[1].spines["left"].get_edgecolor()) == GREEN
    # the same through the upload control (what a click on "upload a mark" does)
    other = comp.cite["path"].iloc[20]
    ex.upload.value = ({"name": "logo.png", "type": "image/jpeg", "size": 1,
                        "last_modified": datetime.now(timezone.utc),
                        "content": memoryview(open(other, "rb").read())},)
    assert ex.last["ids"][0] == str(comp.cite["gid"].iloc[20])
    assert "logo.png" in ex.status.value


def test_needs_embeddings_or_a_model(setup):
    from tmr_lib.widgets import search_explorer

    comp, model, index, test_emb = setup
    with pytest.raises(ValueError, match="query_emb"):
        search_explorer(comp, index)
    ex = search_explorer(comp, index, test_emb, queries=comp.test.iloc[:12])  # no model: no uploads
    assert ex.upload.disabled
    with pytest.raises(ValueError, match="model"):
        ex.search_image(comp.cite["path"].iloc[0])
    # embeddings computed from the model when left out
    ex2 = search_explorer(comp, index, model=model, queries=comp.test.iloc[:3], image_size=32)
    assert np.allclose(ex2.query_emb, test_emb[:3], atol=1e-5)
