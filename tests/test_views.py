"""tmr_lib.views: the recipes checked by measurement -- sampled views against the declared rates."""
import argparse
import random

import pytest
import torch

from tmr_lib import augment
from tmr_lib.views import add_views_parser, expected_crop_area, measure_views, plot_views, sample_views, wilson


def _marks(n=12, size=48, seed=0):
    """Small generated marks: a dark box of random colour and shape on white (padded like the cache)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, size, size), 255, dtype=torch.uint8)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(size // 4, size, (2,), generator=g))
        top, left = (size - h) // 2, (size - w) // 2
        x[i, :, top:top + h, left:left + w] = torch.randint(0, 150, (3, 1, 1), generator=g, dtype=torch.uint8)
    return x


@pytest.fixture(scope="module")
def fonts():
    return augment.FontBank(height=9)  # one bank for the module: fonts open once


@pytest.fixture(scope="module")
def tables(fonts):
    marks = _marks()
    return {r: measure_views(marks, r, n=600, size=48, seed=0, confidence=0.999, bank=fonts) for r in augment.RECIPES}


def test_wilson_interval():
    assert wilson(0, 100)[0] == 0.0 and 0.03 < wilson(0, 100)[1] < 0.04
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(100, 100)[1] == pytest.approx(1.0)


def test_expected_crop_area_matches_torchvisions_draw():
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    img = torch.zeros(3, 48, 48)
    areas = []
    for _ in range(4000):
        i, j, h, w = RandomResizedCrop.get_params(img, [0.4, 1.0], [3 / 4, 4 / 3])
        areas.append(h * w / 48 ** 2)
    assert sum(areas) / len(areas) == pytest.approx(expected_crop_area(0.4, 1.0, 48), abs=0.01)
    assert expected_crop_area(0.4, 1.0, 112) < 0.67  # not the midpoint 0.7: large crops fit less often


def test_exact_recipe_measures_as_declared(tables):
    t = tables["2nd-place"]
    assert t["ok"].all(), t[~t["ok"]].to_string()
    rates = set(zip(t["view"], t["operation"]))
    for view, ops in augment.DECLARED["2nd-place"].items():
        assert {(view, op) for op in ops} <= rates
    assert (t["n"] > 0).all()


def test_kit_recipe_measures_as_declared_and_differently(tables):
    kit, exact = tables["kit"], tables["2nd-place"]
    assert kit["ok"].all(), kit[~kit["ok"]].to_string()
    k = kit.set_index(["view", "operation"])
    e = exact.set_index(["view", "operation"])
    for view, op in [("strong", "pseudo-logo"), ("strong", "blur"), ("weak", "gray"), ("strong", "gray"),
                     ("weak", "zoom-out"), ("strong", "crop 0.4-1")]:
        exact_rate = augment.DECLARED["2nd-place"][view][op]
        assert not k.loc[(view, op), "low"] <= exact_rate <= k.loc[(view, op), "high"], (view, op)
        assert not e.loc[(view, op), "low"] <= k.loc[(view, op), "measured"] <= e.loc[(view, op), "high"], (view, op)
    assert k.loc[("strong", "pseudo-logo"), "measured"] == pytest.approx(0.25, abs=0.07)
    assert e.loc[("strong", "pseudo-logo"), "measured"] == pytest.approx(0.5, abs=0.07)


def test_a_wrong_declaration_is_caught(monkeypatch, fonts):
    wrong = {**augment.DECLARED["2nd-place"]["weak"], "gray": 0.2}
    monkeypatch.setitem(augment.DECLARED["2nd-place"], "weak", wrong)
    t = measure_views(_marks(6), "2nd-place", n=400, size=40, seed=1, bank=fonts)
    off = t[~t["ok"]]
    assert list(zip(off["view"], off["operation"])) == [("weak", "gray")]


def test_sampling_leaves_the_global_random_state_alone(fonts):
    threads = torch.get_num_threads()
    random.seed(11)
    torch.manual_seed(11)
    a, b = random.random(), torch.rand(1)
    random.seed(11)
    torch.manual_seed(11)
    views, trace = sample_views(_marks(3), "2nd-place", n=10, size=32, strong=True, bank=fonts, keep=True)
    assert torch.get_num_threads() == threads
    assert views.shape == (10, 3, 32, 32) and len(trace.views) == 10
    assert random.random() == a and torch.equal(torch.rand(1), b)


def test_plot_views_titles_each_view():
    fig = plot_views(_marks(2), "2nd-place", n_views=4, size=32)
    assert len(fig.axes) == 2 * 2 * 5
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("logo" in t or "crop" in t for t in titles) >= 4


def _views_cli(argv):
    p = argparse.ArgumentParser(prog="tmr")
    add_views_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["views", *argv])
    return args.func(args)


def test_tmr_views_exits_0_on_the_exact_recipe_and_1_when_off(ci_dataset, capsys, monkeypatch):
    data = str(ci_dataset[0])
    assert _views_cli(["--data", data, "--n", "300", "--size", "40", "--marks", "30"]) == 0
    out = capsys.readouterr().out
    assert "all" in out and "rows ok" in out and "pseudo-logo" in out and "logo: mark top, text below" in out
    monkeypatch.setitem(augment.DECLARED["kit"]["strong"], "pseudo-logo", 0.5)
    assert _views_cli(["--data", data, "--recipe", "kit", "--n", "300", "--size", "40", "--marks", "30"]) == 1
    assert "strong pseudo-logo" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        _views_cli(["--data", data + "-missing"])


def test_rates_are_shares_of_views():
    t = measure_views(_marks(4), "kit", n=50, size=32, familywise=False)
    rates = t[t["operation"].isin(augment.DECLARED["kit"]["weak"])]
    assert ((rates["measured"] >= 0) & (rates["measured"] <= 1)).all()
    assert t.attrs["confidence"] == 0.95  # every row at 95 % when not family-wise
    assert measure_views(_marks(4), "kit", n=50, size=32).attrs["confidence"] > 0.998
