"""Cross-checks on a machine with `transformers` (the GPU host; not part of ctest):

  parity MODELS_DIR LAL      for each tiny model: transformers' logits vs expected.safetensors (validates the
                             independent reference), and greedy ids of transformers vs `LAL generate --ids`.
  bench MODEL_DIR B P N      transformers generate() throughput (greedy, dynamic cache) as the anchor for
                             `lal bench generate`; B may be a list (1,8): one JSON line per batch size, one load.
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def parity(models_dir, lal, device="cuda"):
    from transformers import AutoModelForCausalLM
    ok = True
    cases = []  # (name, tag, prompt index, hf ids, max-abs error, lal command)
    for name in sorted(os.listdir(models_dir)):
        d = os.path.join(models_dir, name)
        if not os.path.exists(os.path.join(d, "expected.safetensors")):
            continue
        ex = st_io.load(os.path.join(d, "expected.safetensors"))
        for dtype, tag in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
            try:
                model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).to(device).eval()
            except Exception as e:  # report and go on with the other models
                print(json.dumps({"model": name, "dtype": tag, "transformers_error": repr(e)[:300]}))
                ok = False
                continue
            i = 0
            while f"prompt.{i}" in ex:
                ids = ex[f"prompt.{i}"]
                with torch.no_grad():
                    logits = model(ids[None].to(device)).logits[0].float().cpu()
                ref = ex[f"logits.{i}" if tag == "float32" else f"logits_bf16.{i}"]
                err = (logits - ref).abs().max().item()
                out = model.generate(ids[None].to(device), max_new_tokens=10, do_sample=False,
                                     eos_token_id=[2, 3], pad_token_id=0)[0, len(ids):].tolist()
                cmd = [lal, "generate", "--model_path", d, "--prompt_ids", ",".join(map(str, ids.tolist())),
                       "--max_new_tokens", "10", "--greedy", "--ids", "--device", device, "--dtype", tag]
                cases.append((name, tag, i, out, err, cmd))
                i += 1
            del model
    # Each `lal generate` is a process of its own (CUDA start-up dominates): run several at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda c: subprocess.run(c[5], capture_output=True, text=True), cases))
    for (name, tag, i, out, err, cmd), run in zip(cases, runs):
        if run.returncode != 0:
            print(json.dumps({"model": name, "dtype": tag, "prompt": i, "lal_error": run.stderr[-500:]}))
            ok = False
            continue
        got = json.loads(run.stdout)
        same = got == out
        good = same and (err <= 1e-4 if tag == "float32" else True)
        ok = ok and (good or tag == "bfloat16")
        print(json.dumps({"model": name, "dtype": tag, "prompt": i, "hf_vs_reference_max_abs": err,
                          "greedy_equal_lal_hf": same, "hf": out, "lal": got}))
    print("PARITY", "OK" if ok else "FAILED")
    return 0 if ok else 1


def bench(model_dir, batches, prompt_len, new_tokens, device="cuda"):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device).eval()
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 150000 if model.config.vocab_size > 150000 else model.config.vocab_size - 1,
                            (batch, prompt_len), generator=g).to(device)
        kw = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids, **dict(kw, max_new_tokens=4, min_new_tokens=4))  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(ids)
            torch.cuda.synchronize()
            prefill = time.perf_counter() - t0
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            model.generate(ids, **kw)
            torch.cuda.synchronize()
            total = time.perf_counter() - t0
        step = (total - prefill) / (new_tokens - 1)
        print(json.dumps({"anchor": "transformers generate (greedy, dynamic cache)", "model": model_dir,
                          "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
                          "prefill_tokens_per_s": batch * prompt_len / prefill, "decode_ms_per_step": step * 1e3,
                          "decode_tokens_per_s": batch / step,
                          "peak_memory_bytes": torch.cuda.max_memory_allocated()}), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "parity":
        sys.exit(parity(sys.argv[2], sys.argv[3]))
    sys.exit(bench(sys.argv[2], [int(b) for b in sys.argv[3].split(",")], int(sys.argv[4]), int(sys.argv[5])))
