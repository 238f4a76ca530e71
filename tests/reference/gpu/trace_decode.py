"""Summarise the decode steps in a torch profiler trace of `lal bench generate --trace FILE` (Chrome JSON, CUDA-graph
decode): each step is one cudaGraphLaunch, its kernels are those with the launch's correlation id. Prints, over the
steps (the first two left out: warm caches), the median step span on the device (first kernel start to last kernel
end), the kernels' summed time (busy), the idle time between kernels inside the step and between steps, and per
kernel name the launches and microseconds per step with the share of the span, largest first. Without graph launches
(eager decode) it falls back to kernels launched at least once per step. Prints text.

    python3 tests/reference/gpu/trace_decode.py TRACE.json [TOP]
"""
import collections
import json
import re
import statistics
import sys


def short(name):
    name = name.replace("(anonymous namespace)::", "")
    name = re.sub(r"\(.*", "", name)  # the parameter list
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"^lal::lm::cuda::", "", name)
    return name[:110]


def main():
    trace = json.load(open(sys.argv[1]))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kernels = [e for e in events if e.get("cat") == "kernel" and "dur" in e]
    launches = sorted((e for e in events if e.get("cat") == "cuda_runtime" and e.get("name") == "cudaGraphLaunch"),
                      key=lambda e: e["ts"])
    by_corr = collections.defaultdict(list)
    for k in kernels:
        by_corr[k.get("args", {}).get("correlation")].append(k)
    steps = [sorted(by_corr[g.get("args", {}).get("correlation")], key=lambda k: k["ts"]) for g in launches]
    steps = [s for s in steps if s]
    if len(steps) < 4:
        print(f"{len(launches)} graph launches with kernels: {len(steps)}; no CUDA-graph decode to summarise")
        return
    steps = steps[2:]
    spans, busy, inner_idle, between = [], [], [], []
    per_name = collections.defaultdict(float)
    count = collections.Counter()
    prev_end = None
    for s in steps:
        start, end = s[0]["ts"], max(k["ts"] + k["dur"] for k in s)
        spans.append(end - start)
        busy.append(sum(k["dur"] for k in s))
        inner_idle.append(spans[-1] - busy[-1])
        if prev_end is not None:
            between.append(start - prev_end)
        prev_end = end
        for k in s:
            per_name[short(k["name"])] += k["dur"]
            count[short(k["name"])] += 1
    n = len(steps)
    span = statistics.median(spans)
    print(f"{n} decode steps (graph launches) after the first two; per step (median): span {span:.1f} us, "
          f"{len(steps[-1])} kernels, busy {statistics.median(busy):.1f} us, idle inside the step "
          f"{statistics.median(inner_idle):.1f} us, between steps {statistics.median(between) if between else 0:.1f} us")
    print(f"{'launches':>8} {'us/step':>8} {'us each':>8} {'% span':>6}  kernel")
    for name, t in sorted(per_name.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{count[name] / n:8.2f} {t / n:8.1f} {t / count[name]:8.2f} {100 * t / n / span:6.1f}  {name}")


if __name__ == "__main__":
    main()
