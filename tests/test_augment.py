"""Augmentation on uint8 batches: the kit's and the 2nd place's exact weak / strong views (incl. the
two pseudo-logos), the trace that records them, the test-time Affine 0.9."""
import random
import sys

import pytest
import torch
from torchvision.transforms import v2

from tmr_lib.augment import (
    DECLARED,
    EXCLUDED_FONTS,
    RECIPES,
    BatchAugment,
    FontBank,
    FontPseudoLogo,
    PadSquare,
    PseudoLogo,
    TextBank,
    Trace,
    ZoomOut,
    augly_fonts,
    font_glyphs,
    inference_transform,
    normalize,
    strong_transform,
    unpad,
    weak_transform,
    zoom_out,
)


def _marks(n=6, size=48):
    """Synthetic marks: a dark square of random colour on white."""
    x = torch.full((n, 3, size, size), 255, dtype=torch.uint8)
    for i in range(n):
        x[i, :, size // 4: 3 * size // 4, size // 3: 2 * size // 3] = torch.randint(0, 120, (3, 1, 1), dtype=torch.uint8)
    return x


def _seed(s):
    random.seed(s)
    torch.manual_seed(s)


@pytest.fixture(scope="module")
def fonts():
    return FontBank(height=12)


@pytest.fixture(autouse=True)
def one_thread():
    """Per-image ops on tiny tensors: extra threads only add overhead (as in training's workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_text_bank_renders_latin_and_japanese():
    bank = TextBank(n_lines=20, height=24, seed=0)
    assert len(bank.lines) == 20
    assert all(line.dtype == torch.uint8 and line.shape[0] == 1 and line.shape[1] == 24 for line in bank.lines)
    assert all(line.max() > 128 for line in bank.lines)  # every line has ink (no missing glyph boxes only)
    assert bank.font_path().endswith(".ttf")


@pytest.mark.parametrize("recipe", RECIPES)
def test_weak_and_strong_batches_keep_shape_and_dtype(recipe, fonts):
    _seed(0)
    bank = TextBank(n_lines=8) if recipe == "kit" else fonts
    aug = BatchAugment(40, text_bank=bank, recipe=recipe)
    for strong in (False, True):
        out = aug(_marks(), strong=strong)
        assert out.shape == (6, 3, 40, 40) and out.dtype == torch.uint8
    x = normalize(out)
    assert x.dtype == torch.float32 and x.shape == out.shape


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_image_gets_its_own_random_draw(recipe, fonts):
    _seed(1)
    bank = TextBank(n_lines=8) if recipe == "kit" else fonts
    aug = BatchAugment(48, text_bank=bank, recipe=recipe)
    out = aug(_marks(1).repeat(8, 1, 1, 1), strong=True)
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) > 4


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="2nd-place"):
        BatchAugment(32, recipe="2nd place")
    from tmr_lib.train import AUGMENT_STYLES

    assert set(RECIPES) <= set(AUGMENT_STYLES) and set(DECLARED) == set(RECIPES)


def test_kit_pseudo_logo_puts_the_mark_beside_text_on_white():
    _seed(2)
    mark = _marks(1, 64)[0]
    out = PseudoLogo(TextBank(n_lines=8))(mark)
    assert out.shape == mark.shape and out.dtype == torch.uint8
    ink = (out.float().mean(0) < 200)
    assert 0.02 < ink.float().mean() < 0.6  # something drawn, mostly white paper
    assert (out[:, 0, :] == 255).all() or (out[:, :, -1] == 255).all()


def test_no_vertical_flip_anywhere(fonts):
    for recipe in RECIPES:
        bank = TextBank(n_lines=4) if recipe == "kit" else fonts
        for t in (weak_transform(32, recipe=recipe), strong_transform(32, text_bank=bank, recipe=recipe)):
            text = repr(t)
            assert "Vertical" not in text and "HorizontalFlip" in text
            assert not any(isinstance(m, v2.RandomVerticalFlip) for m in t.modules())


def test_inference_transform_zooms_out_on_white():
    batch = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)  # a black image fills the frame
    out = inference_transform(batch, 0.9)
    assert out.shape == batch.shape
    assert (out[:, :, 0, :] == 255).all() and (out[:, :, :, -1] == 255).all()  # white border appears
    assert (out[:, :, 20, 20] == 0).all()
    assert torch.equal(inference_transform(batch, 1.0), batch)


def test_zoom_out_blends_the_edge_with_white_once():
    """torchvision's bilinear fill draws a gray frame on a white image; the 2nd place's cv2 did not."""
    white = torch.full((3, 48, 48), 255, dtype=torch.uint8)
    assert (zoom_out(white, 0.9) == 255).all() and (zoom_out(white, 0.54) == 255).all()
    _seed(8)
    views = BatchAugment(48, recipe="2nd-place")(white[None].repeat(12, 1, 1, 1))
    assert all(len(v[c].unique()) == 1 for v in views for c in range(3))  # one colour per channel: no frame


def test_exact_weak_view_zooms_out_like_test_time():
    """The 2nd place's weak view starts with Affine 0.9 (as test time does); the kit's has none."""
    black = torch.zeros(3, 48, 48, dtype=torch.uint8)
    assert (ZoomOut((0.9,))(black)[:, 0, :] == 255).all()
    _seed(3)
    white_share = {}
    for recipe in RECIPES:
        trace = Trace()
        aug = BatchAugment(48, text_bank=TextBank(n_lines=2) if recipe == "kit" else None, recipe=recipe, trace=trace)
        views = aug(black[None].repeat(40, 1, 1, 1))
        white_share[recipe] = float(((views.min(dim=1).values > 200).flatten(1).any(dim=1)).float().mean())
        assert len(trace.views) == 40 and all(r["view"] == "weak" for r in trace.views)
        assert {r.get("zoom-out") for r in trace.views} == ({0.9} if recipe == "2nd-place" else {None})
    assert white_share["kit"] == 0.0  # RRC of a black square stays black
    assert white_share["2nd-place"] > 0.5  # most crops keep some of the white margin


def test_trace_records_every_view_and_nothing_without_one(fonts):
    _seed(4)
    trace = Trace()
    aug = BatchAugment(32, text_bank=fonts, recipe="2nd-place", trace=trace)
    aug(_marks(5, 32), strong=False)
    aug(_marks(5, 32), strong=True)
    assert [r["view"] for r in trace.views] == ["weak"] * 5 + ["strong"] * 5
    assert all(r["zoom-out"] == pytest.approx(0.9) and "crop 0.7-1" in r for r in trace.views[:5])
    for r in trace.views[5:]:  # exactly one strong branch per view
        assert ("pseudo-logo" in r) != ("crop 0.4-1" in r)
        assert ("zoom-out" in r) == ("crop 0.4-1" in r)
    plain = BatchAugment(32, text_bank=fonts, recipe="2nd-place")
    assert all(getattr(m, "trace", None) is None for m in plain.strong.modules())


def test_unpad_gives_the_trimmed_mark_and_pad_square_restores_it():
    x = torch.full((3, 40, 40), 255, dtype=torch.uint8)
    x[:, 10:30, :] = 0  # a 40 x 20 mark padded top and bottom
    mark = unpad(x)
    assert mark.shape == (3, 20, 40) and (mark == 0).all()
    assert unpad(x, 80).shape == (3, 40, 80)  # LongestMaxSize to another size
    assert torch.equal(PadSquare(40)(mark), x)
    blank = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    assert torch.equal(unpad(blank), blank)


def test_augly_fonts_exclude_two_and_load_without_importing_augly(fonts):
    """Only AugLy's font files are used: its image API would pull in its pinned old Pillow."""
    fonts.line(0, 5)
    assert not any(m == "augly" or m.startswith("augly.") for m in sys.modules)
    names = [p.name for p in augly_fonts()]
    assert len(names) > 300 and len(set(names)) == len(names)
    assert not any(x in n for n in names for x in EXCLUDED_FONTS)


def test_glyphs_come_from_each_fonts_own_table(fonts):
    tables = [font_glyphs(fonts.fonts[i]) for i in (0, 1, len(fonts) // 2)]
    assert all(t and all(isinstance(c, int) for c in t) for t in tables)
    assert len({len(t) for t in tables}) > 1  # fonts cover different glyphs
    line = fonts.line(0, 7)
    assert line.dtype == torch.uint8 and line.shape[0] == 1 and line.shape[1] >= fonts.height * 0.8
    assert torch.equal(line, fonts.line(0, 7)) and line.max() > 128  # cached, and inked


def _centroid_x_y(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


def test_font_pseudo_logo_layouts_fonts_and_geometry(fonts):
    """Over a few hundred draws: many fonts, all four layouts, the mark where the layout says."""
    _seed(5)
    size = 96
    red = torch.zeros(3, 40, 40, dtype=torch.uint8)
    red[0] = 255  # a pure red mark: red pixels are the mark, dark ones the text
    trace = Trace()
    logo = FontPseudoLogo(fonts, size, trace)
    where = {}
    for _ in range(300):
        trace.start("strong")
        out = logo(red)
        rec = trace.views[-1]
        if "pseudo-logo failed" in rec:
            assert torch.equal(out, red)
            continue
        assert out.shape == (3, size, size) and out.dtype == torch.uint8
        mark = (out[0] > 200) & (out[1] < 60)
        text = out.max(dim=0).values < 100
        if text.sum() > 5:
            (mx, my), (tx, ty) = _centroid_x_y(mark), _centroid_x_y(text)
            where.setdefault(rec["pseudo-logo"], []).append((mx < tx, my < ty))
    layouts = [r["pseudo-logo"] for r in trace.views]
    assert set(layouts) == {"top", "bottom", "left", "right"}
    assert len({r["font"] for r in trace.views}) > 50
    assert sum("pseudo-logo failed" in r for r in trace.views) < 30
    share = lambda key, i: sum(p[i] for p in where[key]) / len(where[key])  # noqa: E731
    assert share("top", 1) > 0.9 and share("bottom", 1) < 0.1  # mark above / below the text
    assert share("left", 0) > 0.9 and share("right", 0) < 0.1  # mark left / right of the text


def test_font_pseudo_logo_keeps_the_marks_aspect(fonts):
    _seed(6)
    wide = torch.zeros(3, 20, 60, dtype=torch.uint8)
    wide[0] = 255  # red: the mark's pixels, whatever the text does
    logo = FontPseudoLogo(fonts, 60)
    for _ in range(5):
        red = (lambda o: (o[0] > 200) & (o[1] < 60))(logo(wide))
        rows, cols = torch.nonzero(red.any(dim=1)), torch.nonzero(red.any(dim=0))
        assert 2.5 < len(cols) / len(rows) < 3.5  # shrunk, still three times wider than tall


def test_a_font_failure_returns_the_image_unchanged(tmp_path):
    broken = tmp_path / "Broken.ttf"
    broken.write_bytes(b"not a font")
    trace = Trace()
    logo = FontPseudoLogo(FontBank(height=10, fonts=[broken]), 48, trace)
    mark = _marks(1, 48)[0]
    trace.start("strong")
    assert torch.equal(logo(mark), mark) and "pseudo-logo failed" in trace.views[-1]


def test_exact_strong_view_pads_the_failed_logo_back_to_a_square(tmp_path):
    broken = tmp_path / "Broken.ttf"
    broken.write_bytes(b"not a font")
    _seed(7)
    x = torch.full((4, 3, 48, 48), 255, dtype=torch.uint8)
    x[:, :, 12:36, :] = 0  # wide marks
    out = BatchAugment(48, text_bank=FontBank(height=9, fonts=[broken]), recipe="2nd-place")(x, strong=True)
    assert out.shape == (4, 3, 48, 48)


def test_training_batches_use_the_configured_recipe(fonts):
    from tmr_lib.train import PairBatches

    for style in RECIPES:
        ds = PairBatches(_marks(2, 32), 32, style=style, text_bank=fonts if style == "2nd-place" else None)
        assert ds.augment.recipe == style
