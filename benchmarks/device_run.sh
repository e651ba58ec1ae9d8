#!/usr/bin/env bash
# One prepared device call: the gpu-preset check, then mark pretraining on the GPU.
# Wheels for packages the device image lacks travel in .whl/ (see the device README).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
MIN=${PRETRAIN_MINUTES:-6}
timeout 150 python3 benchmarks/gpu_check.py --steps 4 2>&1 | tee $OUT/gpu_check.txt | tail -40 || echo "gpu check failed"
python3 -m tmr_lib pretrain --backbone mobilenetv3_large_100 --image-size 112 --n-pairs ${PAIRS:-64000} \
  --batch-pairs ${BATCH:-512} --lr ${LR:-3e-3} --minutes $MIN --workers 16 --pool /tmp/pool/pool.npy \
  --out /tmp/pt --export $OUT/tmr-marks-mnv3l.safetensors 2>&1 | grep -v "it/s\]" | tail -20
cp /tmp/pt/pretrain_summary.json $OUT/ 2>/dev/null
python3 - <<'PY'
import json, torch, os
ck = torch.load("/tmp/pt/last.pt", map_location="cpu", weights_only=False)
json.dump(ck["history"], open(os.environ["OUT"] + "/history.json", "w"))
print("last losses", [h["loss"] for h in ck["history"][-5:]], "steps", ck["step"])
PY
