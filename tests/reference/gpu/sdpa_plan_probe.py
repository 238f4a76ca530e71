"""How long LibTorch's attention takes the first time it meets a new shape, at inference, on this GPU: the prefill
shapes of a chat turn (batch 1, 28 query heads over 4 KV heads expanded, head 128, bf16, a bool mask as lal's
engine passes with a cached prefix), each length new, with LibTorch's default backend order and with cuDNN's attention
switched off (what branch gpu-prefill-sdpa does at inference). Prints one JSON line per setting.

    python3 tests/reference/gpu/sdpa_plan_probe.py
"""
import json
import time

import torch
import torch.nn.functional as F


def run(label, lengths, prefix):
    out = []
    for t in [lengths[0] // 2] + lengths:  # the first shape warms the backend's libraries up: not reported
        s = prefix + t
        q = torch.randn(1, 28, t, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 28, s, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        mask = torch.ones(t, s, device="cuda", dtype=torch.bool).tril(prefix)[None, None]
        times = []
        for _ in range(2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        if t != lengths[0] // 2:
            out.append({"q_len": t, "kv_len": s, "first_ms": round(times[0], 2), "again_ms": round(times[1], 3)})
    print(json.dumps({"setting": label, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                      "total_first_ms": round(sum(o["first_ms"] for o in out), 1), "shapes": out}))


torch.randn(1, device="cuda")
run("default order", [37, 121, 298, 513, 77], 300)
torch.backends.cuda.enable_cudnn_sdp(False)
run("cuDNN attention off", [39, 123, 300, 515, 79], 300)
