// The thought timeline in a real browser: headless Debian Chromium, driven over the DevTools protocol on a pipe (no
// extra packages), loads `lal serve`'s page, sends a message, waits for the answer, checks that the DOM holds the
// turn's stages, and keeps a screenshot (timeline.png in the build directory).
import test from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer } from "./server.mjs";

const CHROMIUM = process.env.LAL_CHROMIUM || "chromium";
const ARTIFACTS = process.env.LAL_SERVE_ARTIFACTS || os.tmpdir();

/// Chromium with --remote-debugging-pipe: commands go to its fd 3, replies and events come from its fd 4, each a
/// JSON message ended by a NUL byte.
class Browser {
  constructor() {
    this.profile = fs.mkdtempSync(path.join(os.tmpdir(), "lal-chromium-"));
    this.proc = spawn(CHROMIUM, ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--no-first-run", "--no-default-browser-check", "--remote-debugging-pipe",
                                 "--user-data-dir=" + this.profile, "--window-size=1100,1000", "--lang=ja",
                                 "about:blank"],
                      { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
    this.stderr = "";
    this.proc.stderr.on("data", (d) => { this.stderr += d; });
    this.next = 1;
    this.waiting = new Map();
    let buffer = Buffer.alloc(0);
    this.proc.stdio[4].on("data", (d) => {
      buffer = Buffer.concat([buffer, d]);
      for (let end; (end = buffer.indexOf(0)) >= 0; buffer = buffer.subarray(end + 1)) {
        const message = JSON.parse(buffer.subarray(0, end).toString("utf8"));
        const w = message.id && this.waiting.get(message.id);
        if (!w) continue;
        this.waiting.delete(message.id);
        if (message.error) w.reject(new Error(`${w.method}: ${message.error.message}`));
        else w.resolve(message.result);
      }
    });
    this.exited = new Promise((resolve) => this.proc.on("exit", resolve));
  }
  send(method, params = {}, sessionId) {
    const id = this.next++;
    const message = { id, method, params };
    if (sessionId) message.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, method });
      this.proc.stdio[3].write(JSON.stringify(message) + "\0");
    });
  }
  async open(url) {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = {
      send: (method, params) => this.send(method, params, sessionId),
      async eval(expression) {
        const r = await page.send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
        if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description}`);
        return r.result.value;
      },
    };
    await page.send("Page.enable");
    await page.send("Page.navigate", { url });
    return page;
  }
  async close() {
    try { await this.send("Browser.close"); } catch (_) { this.proc.kill("SIGKILL"); }
    await this.exited;
    fs.rmSync(this.profile, { recursive: true, force: true });
  }
}

async function until(what, check, seconds) {
  for (const end = Date.now() + seconds * 1000; Date.now() < end;) {
    const value = await check();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("the timeline page streams a turn's stages and its answer", async () => {
  const server = await startServer();
  const browser = new Browser();
  try {
    const page = await browser.open(server.url + "/");
    await until("the page", () => page.eval("document.readyState === 'complete' && !!document.getElementById('composer')"), 60);
    await until("the model list", () => page.eval("document.getElementById('status').className.includes('ok')"), 30);
    await page.eval(`(() => {
      document.getElementById('message').value = '光合成とは何ですか？';
      document.getElementById('composer').requestSubmit();
    })()`);
    const state = await until("the answer",
      () => page.eval("(document.querySelector('.turn') || {dataset: {}}).dataset.state || ''").then((s) => s === "thinking" ? "" : s), 240);
    assert.equal(state, "done", await page.eval("document.querySelector('.turn').innerText"));
    const dom = await page.eval(`(() => ({
      user: document.querySelector('.turn .user-message').textContent,
      lanes: [...document.querySelectorAll('.turn .lane')].map((l) => ({ stage: l.dataset.stage,
        text: l.querySelector('.text').textContent, open: l.open, live: l.classList.contains('live') })),
      emotion: document.querySelector('.turn .emotion').textContent,
      timing: document.querySelector('.turn .timing').textContent,
    }))()`);
    assert.equal(dom.user, "光合成とは何ですか？");
    const stages = dom.lanes.map((l) => l.stage);
    assert.ok(stages.includes("answer"), `lanes: ${stages}`);
    assert.equal(stages[stages.length - 1], "answer", "the answer lane comes last");
    const thoughts = stages.filter((s) => ["intuition", "recall", "exploration", "analysis", "insight"].includes(s));
    assert.ok(thoughts.length >= 2, `thought lanes: ${stages}`);
    for (const lane of dom.lanes) {
      assert.ok(lane.text.length > 0, `empty ${lane.stage} lane`);
      assert.ok(!lane.live, `${lane.stage} still marked live`);
    }
    assert.match(dom.emotion, /感情/);
    assert.match(dom.timing, /ms/);
    // Lanes collapse like <details> do.
    assert.equal(await page.eval("(() => { const l = document.querySelector('.lane'); l.querySelector('summary').click(); return l.open; })()"), false);
    await page.eval("document.querySelector('.lane').open = true");
    const shot = await page.send("Page.captureScreenshot", { format: "png" });
    const png = Buffer.from(shot.data, "base64");
    assert.ok(png.length > 10000, `screenshot is only ${png.length} bytes`);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    fs.writeFileSync(path.join(ARTIFACTS, "timeline.png"), png);
    console.log("screenshot: " + path.join(ARTIFACTS, "timeline.png"));

    // The stop button aborts the stream; the server sees the disconnect and cancels the turn.
    await page.eval(`(() => {
      document.getElementById('message').value = 'TCPとUDPの違いは？';
      document.getElementById('composer').requestSubmit();
    })()`);
    await until("the second turn's first lane", () => page.eval("document.querySelectorAll('.turn')[1]?.querySelector('.lane') != null"), 120);
    await page.eval("document.getElementById('stop').click()");
    const stopped = await until("the stopped turn",
      () => page.eval("document.querySelectorAll('.turn')[1].dataset.state").then((s) => s === "thinking" ? "" : s), 60);
    assert.equal(stopped, "error");
    assert.match(await page.eval("document.querySelectorAll('.turn')[1].querySelector('.error').textContent"), /中断/);
    const disconnected = await until("the server's cancel", async () => {
      const m = await (await fetch(server.url + "/metrics")).text();
      return Number((m.match(/^lal_turns_total\{outcome="disconnected"\} (\d+)/m) || [0, 0])[1]);
    }, 30);
    assert.equal(disconnected, 1);
  } finally {
    await browser.close();
    const { code } = await server.stop();
    assert.equal(code, 0);
  }
});
