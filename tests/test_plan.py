"""`tmr plan`: the arithmetic of RAM, disk and time, the advice, the command line (fast: no --measure
except one tiny ci run)."""
from __future__ import annotations

import pytest

from tmr_lib.cli import main
from tmr_lib.config import get_config
from tmr_lib.plan import (BASELINE_RSS_BYTES, NPY_HEADER, Counts, index_bytes, plan, reference_costs)

GPU_ARGS = ["--cites", "800000", "--test", "1542", "--train", "27000"]


def test_counts_from_numbers():
    c = Counts.from_numbers(cites=800_000, test=1_542, train=27_000)
    assert (c.cites, c.test, c.train) == (800_000, 1_542, 27_000)
    assert c.distinct_images == 800_000 + 1_542 + 27_000  # train cites are among the cites
    assert c.embedded_rows == 800_000 + 1_542 + 2 * 27_000  # predict embeds apply and train cite per row
    with pytest.raises(ValueError):
        Counts.from_numbers(cites=-1, test=0, train=0)


def test_cache_disk_is_the_formula():
    cfg = get_config("cpu")  # 112 px, one backbone
    counts = Counts.from_numbers(cites=1000, test=0, train=0)
    p = plan(cfg, counts, reference_costs(cfg), ram_gb=100, disk_gb=100)
    assert p.row("decoded image cache (disk)").value == 1000 * 3 * 112 * 112 + NPY_HEADER
    assert p.row("embeddings (disk)").value == 1000 * 512 * 4 + 4 * NPY_HEADER
    assert p.row("index (RAM)").value == 0  # flat on the CPU searches the embeddings in place
    assert plan(cfg.replace(index="hnsw"), counts, reference_costs(cfg)).row("index (RAM)").value > 1000 * 512 * 4
    assert p.row("peak RAM embed+index+predict").value > BASELINE_RSS_BYTES


def test_index_kinds_and_ensemble_width():
    flat, _ = index_bytes("flat", 800_000, 1024)
    assert flat == 800_000 * 1024 * 4
    assert index_bytes("hnsw", 800_000, 1024)[0] == pytest.approx(800_000 * (1024 * 4 + 32 * 2 * 4))
    assert flat < index_bytes("ivf", 800_000, 1024)[0] < 1.2 * flat
    assert index_bytes("IVF3577,PQ64", 800_000, 1024)[0] < flat / 20
    cfg = get_config("gpu")  # two backbones concatenated, five folds averaged: 2 x 512 per row
    p = plan(cfg, Counts.from_numbers(1000, 0, 0), reference_costs(cfg), ram_gb=1000, disk_gb=1000)
    assert p.row("index (RAM)").value == 1000 * 1024 * 4
    assert p.row("decoded image cache (disk)").value == 1000 * 3 * 384 * 384 + NPY_HEADER


def test_advice_when_ram_is_tiny_not_when_huge():
    cfg = get_config("gpu")
    counts = Counts.from_numbers(cites=800_000, test=1_542, train=27_000)
    costs = reference_costs(cfg)
    small = plan(cfg, counts, costs, ram_gb=2, disk_gb=100_000)
    assert not small.fits and not small.fits_ram and small.fits_disk
    text = "\n".join(small.advice())
    assert "RAM" in text and "PQ" in text and "index" in text
    big = plan(cfg, counts, costs, ram_gb=10_000, disk_gb=100_000)
    assert big.fits and big.advice() == []
    no_disk = plan(cfg, counts, costs, ram_gb=10_000, disk_gb=10)
    assert not no_disk.fits_disk and any("image_size" in a for a in no_disk.advice())


def test_time_grows_with_the_work():
    cfg = get_config("cpu")
    costs = reference_costs(cfg)
    a = plan(cfg, Counts.from_numbers(10_000, 100, 1000), costs, ram_gb=100, disk_gb=100)
    b = plan(cfg, Counts.from_numbers(100_000, 100, 1000), costs, ram_gb=100, disk_gb=100)
    assert b.row("time embed").value == pytest.approx(a.row("time embed").value * 102_100 / 12_100, rel=1e-9)
    assert b.row("time decode").value > a.row("time decode").value


def test_cli_gpu_and_cpu_exit_codes(capsys):
    assert main(["plan", "--preset", "gpu", *GPU_ARGS, "--ram-gb", "1000", "--disk-gb", "100000"]) == 0
    out = capsys.readouterr().out
    for row in ("decoded image cache (disk)", "embeddings (disk)", "index (RAM)", "peak RAM embed+index+predict",
                "peak RAM training", "time decode", "time train", "time embed", "time search", "ASSUMPTION"):
        assert row in out
    assert main(["plan", "--preset", "gpu", *GPU_ARGS, "--ram-gb", "64", "--disk-gb", "64"]) == 1
    out = capsys.readouterr().out
    assert "what to change" in out and "DOES NOT FIT" in out and "does not fit (exit code 1)" in out
    assert main(["plan", "--preset", "cpu", *GPU_ARGS, "--ram-gb", "16", "--disk-gb", "100"]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv3_large_100" in out and "fits (exit code 0)" in out
    assert main(["plan", "--preset", "cpu", "--cites", "10", "--test", "1"]) == 2  # --train missing


def test_cli_on_the_ci_competition(ci_dataset, capsys):
    data = str(ci_dataset[0])
    assert main(["plan", "--preset", "ci", "--data", data, "--ram-gb", "64", "--disk-gb", "64"]) == 0
    out = capsys.readouterr().out
    counts = Counts.from_data(data)
    assert f"{counts.cites:,} cites" in out and counts.test > 0 and counts.train > 0
    cfg = get_config("ci")
    p = plan(cfg, counts, reference_costs(cfg), ram_gb=64, disk_gb=64)
    assert p.row("decoded image cache (disk)").value == counts.distinct_images * 3 * 64 * 64 + NPY_HEADER


def test_measure_tiny_on_ci(ci_dataset, capsys, one_torch_thread):
    from tmr_lib.plan import measure_costs

    cfg = get_config("ci")
    costs = measure_costs(cfg, ci_dataset[0], n=8)
    assert costs.decode[64] > 0 and costs.embed[("mobilenetv3_large_100", 64)] > 0
    assert "measured here" in costs.sources["decode 64 px"]
    p = plan(cfg, Counts.from_data(ci_dataset[0]), costs, ram_gb=64, disk_gb=64)
    assert "measured here" in p.text()
