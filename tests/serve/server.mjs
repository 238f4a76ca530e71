// Starts `lal serve` for a test on a free loopback port (--port 0; the port is read from its first line) with a
// fresh memory database, and stops it with SIGTERM.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const LAL = process.env.LAL_BIN;
if (!LAL) throw new Error("LAL_BIN is not set (ctest sets it to the lal executable)");

export async function startServer(args = [], { env = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lal-serve-test-"));
  const proc = spawn(LAL, ["serve", "--port", "0", "--memory_db", path.join(dir, "memory.db"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, OMP_NUM_THREADS: "1", ...env },
  });
  let stdout = "", stderr = "";
  proc.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("lal serve did not start in 120 s:\n" + stderr)), 120000);
    proc.stdout.on("data", (d) => {
      stdout += d;
      const m = stdout.match(/listening on (http:\/\/[0-9.]+:[0-9]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    exited.then(({ code }) => { clearTimeout(timer); reject(new Error(`lal serve exited (${code}):\n${stderr}`)); });
  });
  return {
    url,
    dir,
    proc,
    output: () => ({ stdout, stderr }),
    async stop() {
      proc.kill("SIGTERM");
      const result = await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      return { ...result, stdout, stderr };
    },
  };
}
