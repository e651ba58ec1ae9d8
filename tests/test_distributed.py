"""Data-parallel training and embedding under torchrun: 2 CPU processes (gloo) vs one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

KIT = Path(__file__).resolve().parent.parent


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(KIT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


STEP_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch
    import torch.nn.functional as F
    from tmr_lib import distributed as D
    from tmr_lib.losses import make_loss

    D.init_from_env()
    out = sys.argv[1]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    net = torch.nn.parallel.DistributedDataParallel(model) if D.is_distributed() else model
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = make_loss("contrastive", 8, xbm_memory=32)
    loss_fn.use_memory = True
    x = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) // 2                      # 6 labels, 2 items each
    mine = D.shard(12)
    for step in range(3):
        emb = F.normalize(net(x[step, mine]), dim=1)
        emb, labels = D.gather_with_grad(emb), D.gather_rows(y[mine])
        loss = loss_fn(emb, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = torch.cat([p.detach().ravel() for p in model.parameters()]).numpy()
    memory = loss_fn.memory.embedding_memory.numpy()
    np.savez(f"{out}/rank{D.rank()}.npz", params=params, memory=memory, loss=loss.item(),
             filled=bool(loss_fn.memory.has_been_filled))
    del net  # DDP holds the process group; cleanup() must be able to free it
    D.cleanup()
""")


def test_two_processes_take_exactly_the_one_process_steps(tmp_path):
    """Gathered embeddings + DDP averaging give the one-process gradient; the memory stays in sync."""
    script = tmp_path / "steps.py"
    script.write_text(STEP_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": str(KIT)})
    os.rename(tmp_path / "rank0.npz", tmp_path / "single.npz")
    torchrun([str(script), str(tmp_path)], cwd=tmp_path)
    single, r0, r1 = (np.load(tmp_path / f"{n}.npz") for n in ("single", "rank0", "rank1"))
    for key in ("params", "memory", "loss"):
        np.testing.assert_allclose(r0[key], r1[key], atol=1e-6, err_msg=f"ranks disagree on {key}")
        np.testing.assert_allclose(r0[key], single[key], atol=1e-5, err_msg=f"2 processes != 1 process: {key}")
    assert bool(single["filled"]) and np.abs(single["memory"]).sum() > 0  # 36 items passed through a 32-slot queue


def test_shard_splits_every_item_once():
    from tmr_lib import distributed as D

    assert not D.is_distributed() and D.world_size() == 1 and D.is_main()
    assert D.shard(10) == slice(0, 10)
    x = torch.arange(6.0)
    assert D.gather_with_grad(x) is x and D.gather_rows(x) is x and D.any_true(True)


@pytest.mark.timeout(600)
def test_torchrun_train_and_predict_on_ci_match_one_process(ci_dataset, tmp_path):
    """`torchrun --nproc_per_node 2 -m tmr_lib train|predict` on the ci preset: one model.json written by
    rank 0, validation recall close to the one-process run, and sharded embedding gives the same CSV."""
    import shutil

    data, host = ci_dataset
    copy = shutil.copytree(data, tmp_path / "data" / data.name)  # its own cache: the 2 ranks decode it fresh
    common = ["--preset", "ci", "--quiet", "--set", "epochs=2", "--set", "freeze_bn=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "tmr_lib", "train", "--data", str(data), *common, "--out", str(one)],
                   check=True, cwd=KIT, env=env, capture_output=True, timeout=300)
    out = torchrun(["-m", "tmr_lib", "train", "--data", str(copy), *common, "--out", str(two)], cwd=KIT)
    cache = tmp_path / "data" / ".tmr_cache" / data.name
    assert len(list(cache.glob("images-*.npy"))) == 1 and not list(cache.glob("*partial*"))  # each rank its share
    assert out.stdout.count("best held-out Recall@20") == 1, out.stdout  # rank 0 alone reports
    assert "over 2 process(es)" in out.stdout
    meta_one, meta_two = (json.loads((d / "model.json").read_text()) for d in (one, two))
    assert meta_two["processes"] == 2 and meta_one["processes"] == 1
    h1, h2 = (pd.read_csv(next(d.glob("*-fold0/history.csv"))) for d in (one, two))
    assert list(h1["epoch"]) == list(h2["epoch"]) == [0, 1, 2]  # epoch 0: the starting weights
    assert h1["val_recall"].iloc[0] == h2["val_recall"].iloc[0]  # same start, same validation
    assert abs(h1["val_recall"].max() - h2["val_recall"].max()) <= 0.15, (h1, h2)
    assert abs(h1["loss"].iloc[1] - h2["loss"].iloc[1]) <= 0.25 * h1["loss"].iloc[1], (h1, h2)

    # embedding: the same model, sharded over 2 processes, gives the same submission
    csv1, csv2 = tmp_path / "one.csv", tmp_path / "two.csv"
    pred = ["predict", "--preset", "ci", "--model", str(one), "--quiet", "--no-postprocess"]
    subprocess.run([sys.executable, "-m", "tmr_lib", *pred, "--data", str(data), "--out", str(csv1)], check=True,
                   cwd=KIT, env=env, capture_output=True, timeout=300)
    torchrun(["-m", "tmr_lib", *pred, "--data", str(copy), "--out", str(csv2)], cwd=KIT)  # shards taken in turn
    manifests = [json.loads(m.read_text()) for m in cache.glob("emb-*/manifest.json")]
    assert manifests and all(m["done"] == list(range(len(m["done"]))) for m in manifests)
    a, b = pd.read_csv(csv1, dtype=str), pd.read_csv(csv2, dtype=str)
    same = np.mean([x.split()[:10] == y.split()[:10] for x, y in zip(a["cite_gid"], b["cite_gid"])])
    assert list(a["gid"]) == list(b["gid"]) and same >= 0.95
