"""Summarise a torch profiler trace (Chrome JSON, `lal distill --profile_step N`) of one training step: the step's
wall span, GPU kernel time (busy fraction), time per kernel class, the top kernels, and the CPU ops that launched
most. Prints text.

    python3 tests/reference/gpu/profile_summary.py TRACE.json
"""
import collections
import json
import re
import sys

CLASSES = [
    ("lal kernels", re.compile(r"lal::lm::cuda|rms_norm_backward|swiglu|rotary_train|logit_row_stats|logit_softmax")),
    ("gemm", re.compile(r"gemm|cutlass|nvjet|sm90_xmma|cublas|wgmma", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|efficient", re.I)),
    ("optimizer", re.compile(r"adam|foreach|multi_tensor", re.I)),
    ("softmax/loss", re.compile(r"softmax|logsumexp|cross_entropy|nll", re.I)),
    ("reduce", re.compile(r"reduce|norm", re.I)),
    ("copy/cast", re.compile(r"copy|cast|convert|memcpy|memset", re.I)),
    ("nccl", re.compile(r"nccl", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|unrolled|kernel", re.I)),
]


def main():
    trace = json.load(open(sys.argv[1]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    ops = [e for e in events if e.get("cat") == "cpu_op" and "dur" in e]
    spans = [e for e in events if "ts" in e and "dur" in e and e.get("ph") == "X"]
    t0 = min(e["ts"] for e in spans)
    t1 = max(e["ts"] + e["dur"] for e in spans)
    busy = sum(e["dur"] for e in kernels)
    print(f"step span {(t1 - t0) / 1e3:.1f} ms, GPU kernel time {busy / 1e3:.1f} ms "
          f"({100 * busy / max(t1 - t0, 1):.0f} % busy), {len(kernels)} kernels, {len(ops)} CPU ops")
    by_class = collections.Counter()
    by_name = collections.Counter()
    count = collections.Counter()
    for e in kernels:
        name = e["name"]
        cls = next((c for c, rx in CLASSES if rx.search(name)), "other")
        by_class[cls] += e["dur"]
        by_name[name[:110]] += e["dur"]
        count[name[:110]] += 1
    print("\nGPU time by kernel class:")
    for cls, d in by_class.most_common():
        print(f"  {cls:14s} {d / 1e3:8.1f} ms  {100 * d / max(busy, 1):5.1f} %")
    print("\ntop kernels:")
    for name, d in by_name.most_common(15):
        print(f"  {d / 1e3:8.2f} ms  x{count[name]:<5d} {name}")
    top_ops = collections.Counter()
    for e in ops:
        top_ops[e["name"]] += 1
    print("\nmost frequent CPU ops (launch overhead):")
    for name, n in top_ops.most_common(10):
        print(f"  x{n:<6d} {name}")


if __name__ == "__main__":
    main()
