"""GPU path check: the `gpu` preset's encoders forward/backward at 384 px with AMP, embedding
throughput, and faiss on GPU when present. Prints one line per figure; run where CUDA is.

    python benchmarks/gpu_check.py [--steps 5]
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> int:
    import torch

    from tmr_lib.config import get_config
    from tmr_lib.encoder import build_encoder
    from tmr_lib.loop import LoopState, Schedule, train_one_epoch
    from tmr_lib.losses import make_loss

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    cfg = get_config("gpu")
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name in cfg.backbones:
        bcfg = cfg.for_backbone(name)
        model, info = build_encoder(name, pretrained="random", embed_dim=bcfg.embed_dim, image_size=bcfg.image_size)
        model = model.to(dev).to(memory_format=torch.channels_last)
        loss_fn = make_loss(bcfg.loss, embed_dim=bcfg.embed_dim, xbm_memory=bcfg.xbm_memory).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=bcfg.lr)
        scaler = torch.amp.GradScaler("cuda")
        B = bcfg.batch_pairs * bcfg.crops_per_pair
        x = torch.randn(B, 3, bcfg.image_size, bcfg.image_size, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.arange(bcfg.batch_pairs, device=dev).repeat_interleave(bcfg.crops_per_pair)
        torch.cuda.reset_peak_memory_stats()
        ticks = []

        def tick(_updates, _loss):
            torch.cuda.synchronize()
            ticks.append(time.time())

        # the kit's one training loop, as fine-tuning runs it (fp16 autocast + GradScaler)
        stats = train_one_epoch(model, [(x, y)] * (args.steps + 1), loss_fn, opt, Schedule(args.steps + 1),
                                LoopState(), device=dev, prepare=lambda t: t, amp="fp16", scaler=scaler,
                                on_step=tick)
        times = [t1 - t0 for t0, t1 in zip(ticks, ticks[1:])]  # the first step is the warm-up
        loss = stats.losses[-1]
        model.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            xb = torch.randn(64, 3, bcfg.image_size, bcfg.image_size, device=dev).contiguous(memory_format=torch.channels_last)
            model(xb)
            torch.cuda.synchronize()
            t = time.time()
            for _ in range(5):
                model(xb)
            torch.cuda.synchronize()
            emb_rate = 5 * 64 / (time.time() - t)
        out[name] = {"batch": B, "train_step_s": round(sum(times) / len(times), 3),
                     "train_img_per_s": round(B / (sum(times) / len(times)), 1),
                     "embed_img_per_s": round(emb_rate, 1), "loss": round(loss, 4),
                     "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2), "weights": str(info)}
        del model, opt
        torch.cuda.empty_cache()
    try:
        import faiss

        out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        out["faiss_gpus"] = "faiss not installed on this machine"
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
