"""The whole job in a few calls (what `tmr train|predict|demo` run); each lives in its own module.

    from tmr_lib import pipeline
    from tmr_lib.config import get_config
    cfg = get_config("cpu")
    trained = pipeline.train(cfg, "data/tmr-cpu", "runs/cpu")     # tmr_lib.train: every backbone x fold
    pred = pipeline.predict(cfg, "data/tmr-cpu", "runs/cpu", "runs/cpu/submission.csv")   # tmr_lib.predict
    pred.retrieval.metrics("data/tmr-cpu-host")                  # a tmr_lib.retrieval.Retrieval
    pipeline.demo(cfg)                                           # tmr_lib.demo: everything, with baselines

| job | module |
|---|---|
| images decoded once, cached beside the data | :mod:`tmr_lib.images` |
| one training loop; fine-tuning; pretraining | :mod:`tmr_lib.loop`, :mod:`tmr_lib.train`, :mod:`tmr_lib.pretrain` |
| embeddings -> search, ensemble, post-processing, metrics, submission | :mod:`tmr_lib.predict`, :mod:`tmr_lib.retrieval` |
| baselines (random ids, raw pixels) | :mod:`tmr_lib.baselines` |
| the demo and its table | :mod:`tmr_lib.demo` |
"""
from __future__ import annotations

from .baselines import pixel_embeddings
from .demo import demo, format_table, score
from .images import cache_dir, image_store
from .predict import Prediction, embed_competition, predict, retrieval_for
from .train import TrainSummary
from .train import train_models as train

__all__ = ["TrainSummary", "Prediction", "train", "predict", "score", "demo", "image_store", "cache_dir",
           "pixel_embeddings", "format_table", "embed_competition", "retrieval_for"]
