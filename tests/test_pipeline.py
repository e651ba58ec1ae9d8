"""The command line end to end on ci data: demo, train, predict; the submission round trip."""
import subprocess
import sys
import time

import pytest

from tmr_lib.cli import main


def test_pipeline_cli_is_torch_free_at_import():
    code = ("import sys, argparse; import tmr_lib.pipeline_cli as p; "
            "p.register(argparse.ArgumentParser().add_subparsers()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", ["train", "predict", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--preset" in text and "--pretrained" in text


def test_demo_end_to_end_on_ci_data(ci_dataset, tmp_path, capsys):
    from tmr_lib.data import load_competition
    from tmr_lib.submission import read_submission

    data, host = ci_dataset
    out = tmp_path / "run"
    t0 = time.time()
    assert main(["demo", "--preset", "ci", "--data", str(data), "--host", str(host), "--out", str(out), "--quiet"]) == 0
    assert time.time() - t0 < 120
    text = capsys.readouterr().out
    for row in ("random ids", "raw pixels", "untrained: teaching start tmr-teach",
                "untrained: domain start tmr-marks", "ours: "):  # both starts as their own rows
        assert row in text
    assert "ours: fine-tuned (epoch" in text or "ours: starting weights kept" in text  # says what it kept
    assert "R@20" in text and "MRR" in text and "cat 2" in text and "tmr-teach" in text  # says its weights
    comp = load_competition(data)
    sub = read_submission(out / "submission.csv", comp.test["gid"].tolist(), comp.cite["gid"].tolist())
    assert len(sub) == len(comp.test)
    assert all(len(ids.split()) == 20 for ids in sub["cite_gid"])
    assert (out / "retrieval.png").stat().st_size > 10_000
    assert (out / "model.json").is_file() and (out / "demo_results.json").is_file()


def test_train_then_predict_commands(ci_dataset, tmp_path, capsys):
    from tmr_lib.pipeline import score
    from tmr_lib.submission import read_submission

    data, host = ci_dataset
    run = tmp_path / "run"
    assert main(["train", "--preset", "ci", "--data", str(data), "--out", str(run), "--quiet",
                 "--set", "epochs=1", "--set", "val_distractors=20"]) == 0
    assert (run / "model.json").is_file()
    csv = tmp_path / "sub.csv"
    assert main(["predict", "--preset", "ci", "--data", str(data), "--model", str(run), "--out", str(csv),
                 "--host", str(host), "--quiet"]) == 0
    assert "submission" in capsys.readouterr().out
    m = score(csv, host)
    assert 0 <= m["recall"][20] <= 1 and set(m["per_category"]) <= {2, 3, 4, 5}
    assert len(read_submission(csv)) > 0


def test_missing_weights_fail_with_the_fixes(ci_dataset, tmp_path, capsys):
    data, _ = ci_dataset
    code = main(["train", "--preset", "ci", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet",
                 "--pretrained", str(tmp_path / "no-such-weights.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Fixes" in err and "--pretrained random" in err
