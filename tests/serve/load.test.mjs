// A bounded load test: 64 concurrent streaming clients × 3 turns on the demo model through `lal bench serve` (which
// starts `lal serve` itself). Every turn completes without an error, the server's peak RSS stays bounded, and it
// shuts down cleanly on SIGTERM. The numbers are kept as serve-load.json in the build directory.
import test from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { LAL } from "./server.mjs";

const RSS_LIMIT_MIB = 1024;  // the demo model is 13 MiB; 64 user sessions must not grow without bound

test("64 streaming clients × 3 turns all complete", () => {
  const out = execFileSync(LAL, ["bench", "serve", "--clients", "64", "--turns", "3", "--max_tokens", "8",
                                 "--reasoning_effort", "low", "--timeout_s", "800", "--json",
                                 "--serve_arg=--max_concurrent=4", "--serve_arg=--max_queue=128"],
                           { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" }, maxBuffer: 1 << 24 });
  const r = JSON.parse(out.trim().split("\n").pop());
  const artifacts = process.env.LAL_SERVE_ARTIFACTS;
  if (artifacts) fs.writeFileSync(path.join(artifacts, "serve-load.json"), JSON.stringify(r, null, 1));
  console.log(JSON.stringify(r));
  assert.equal(r.errors, 0, JSON.stringify(r.error_samples));
  assert.equal(r.completed, 64 * 3);
  assert.equal(r.first_thought_ms.n, 192);
  assert.ok(r.first_thought_ms.p50 > 0 && r.first_thought_ms.p99 >= r.first_thought_ms.p50);
  assert.equal(r.thought_before_answer, 192, "every turn showed a thought before its answer");
  assert.ok(r.server_rss_peak_mib > 0 && r.server_rss_peak_mib < RSS_LIMIT_MIB, `peak RSS ${r.server_rss_peak_mib} MiB`);
  assert.equal(r.server_exit_status, 0);
});
