#!/usr/bin/env python3
"""A time-boxed fuzzing campaign over every target, on all cores of one machine (docs/benchmarks.md, reliability).

    parallel_campaign.py BIN_DIR CORPUS_DIR WORK SECONDS [TARGET=RUNS ...]

First every target fuzzes alone on one core for CALIBRATE seconds (from a copy of CORPUS_DIR/<target>) to measure
its executions per second; then the machine's cores are shared out in the order the targets are given (their
priority): each gets the cores it needs to reach its RUNS executions (10 M by default) within SECONDS, times MARGIN
(1.3: on the 16-core device a process did 66-80 % of its calibrated rate once every core was busy), while cores are
left; cores left over go one by one to the target with the least to spare. So with too few cores the first targets
still reach their goals and the last get what remains. A target that gets no core is reported as not run. Each target then runs as one libFuzzer
process per core (-jobs/-workers, sharing one growing corpus). Every process runs under ASan+UBSan+LeakSanitizer
(-detect_leaks=1) as built; a crash, leak, timeout (-timeout) or RSS over -rss_limit_mb stops that process and leaves
its input in WORK/<target>/artifacts/; sanitizer reports are also counted in the logs. WORK/summary.tsv: target,
processes, executions, goal, findings (artifacts), sanitizer/libFuzzer error reports in the logs, executions/s on one
core. Exit status 1 when anything was found."""
import glob
import math
import os
import re
import shutil
import subprocess
import sys
import time

FLAGS = ["-timeout=10", "-rss_limit_mb=2048", "-max_len=4096", "-print_final_stats=1", "-detect_leaks=1"]
CALIBRATE = int(os.environ.get("CALIBRATE", "15"))
MARGIN = float(os.environ.get("MARGIN", "1.3"))
# What a finding prints (libFuzzer deadly signal / leak / timeout / OOM, ASan, LSan, UBSan).
REPORT = re.compile(r"ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer")


def executions(log_paths):
    total = 0
    for p in log_paths:
        with open(p, errors="replace") as f:
            m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", f.read())
        if m:
            total += int(m[-1])
    return total


def findings(work, target):
    return sorted(glob.glob(os.path.join(work, target, "artifacts", "*")))


def reports(log_paths):
    n = 0
    for p in log_paths:
        with open(p, errors="replace") as f:
            n += sum(1 for line in f if REPORT.search(line))
    return n


def start(bin_dir, work, target, processes, seconds, runs_each):
    d = os.path.join(work, target)
    cmd = [os.path.join(bin_dir, "fuzz_" + target)] + FLAGS + [
        "-max_total_time=%d" % seconds, "-artifact_prefix=%s/" % os.path.join(d, "artifacts")]
    if runs_each:
        cmd.append("-runs=%d" % runs_each)
    if processes > 1:
        cmd += ["-jobs=%d" % processes, "-workers=%d" % processes]
    cmd.append(os.path.join(d, "corpus"))
    log = open(os.path.join(d, "run.log"), "w")
    return subprocess.Popen(cmd, cwd=d, stdout=log, stderr=subprocess.STDOUT)


def main():
    bin_dir, corpus, work = (os.path.abspath(a) for a in sys.argv[1:4])
    seconds = int(sys.argv[4])
    goals = {}
    for arg in sys.argv[5:] or ["safetensors=10000000", "tokenizer=10000000", "pipeline=10000000",
                                "serve_request=10000000", "jinja=10000000"]:
        name, runs = arg.split("=")
        goals[name] = int(runs)
    cores = int(os.environ.get("CORES", "0")) or os.cpu_count() or 1
    os.makedirs(work, exist_ok=True)
    for t in goals:
        os.makedirs(os.path.join(work, t, "artifacts"), exist_ok=True)
        shutil.copytree(os.path.join(corpus, t), os.path.join(work, t, "corpus"), dirs_exist_ok=True)
    began = time.time()
    # Calibration: one process per target, all at once.
    procs = {t: start(bin_dir, work, t, 1, CALIBRATE, 0) for t in goals}
    for p in procs.values():
        p.wait()
    done, rate = {}, {}
    for t in goals:
        os.rename(os.path.join(work, t, "run.log"), os.path.join(work, t, "calibrate.log"))
        done[t] = executions([os.path.join(work, t, "calibrate.log")])
        rate[t] = max(done[t] / CALIBRATE, 1.0)
    left = seconds - (time.time() - began)
    # Cores each target needs to reach its goal in the time left (with MARGIN), shared out in priority order.
    need = {t: MARGIN * max(goals[t] - done[t], 0) / (rate[t] * left) for t in goals}
    share, free = {}, cores
    for t in goals:
        share[t] = min(math.ceil(need[t]), free) if need[t] > 0 else 0
        free -= share[t]
    # Cores left over: one at a time to the running target with the least to spare (need per core closest to 1).
    while free > 0 and any(share[t] > 0 for t in goals):
        t = max((t for t in goals if share[t] > 0), key=lambda t: need[t] / share[t])
        share[t] += 1
        free -= 1
    print("calibration (executions/s on one core):", {t: round(rate[t]) for t in goals}, flush=True)
    print("processes per target:", share, "for %d s" % left, flush=True)
    procs = {}
    for t in goals:
        if share[t] == 0:
            continue
        runs_each = math.ceil(max(goals[t] - done[t], 0) / share[t])
        procs[t] = start(bin_dir, work, t, share[t], int(left), runs_each)
    for p in procs.values():
        p.wait()
    rows = ["target\tprocesses\texecutions\tgoal\tfindings\treports\tper_second_one_core"]
    found = 0
    for t in goals:
        logs = [os.path.join(work, t, "calibrate.log")] + glob.glob(os.path.join(work, t, "fuzz-*.log"))
        if share.get(t, 0) >= 1:
            logs.append(os.path.join(work, t, "run.log"))
        n = executions(logs if share.get(t, 0) == 1 else [l for l in logs if not l.endswith("run.log")])
        f, r = len(findings(work, t)), reports(logs)
        found += f + r
        rows.append("%s\t%d\t%d\t%d\t%d\t%d\t%d" % (t, share.get(t, 0), n, goals[t], f, r, rate[t]))
    summary = "\n".join(rows) + "\n"
    with open(os.path.join(work, "summary.tsv"), "w") as f:
        f.write(summary)
    print(summary, "wall %.0f s on %d cores" % (time.time() - began, cores), flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
