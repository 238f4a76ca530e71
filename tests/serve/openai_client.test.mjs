// `lal serve` driven by the official `openai` npm client (pinned in scripts/fetch-test-data.sh), on the bundled demo
// model: the stream's shape (reasoning_content before content, the lal extension, usage, finish_reason), the
// non-streaming reply, two users' memories kept apart, 401/400/404/413/429, disconnect cancels, SIGTERM.
import test from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { startServer } from "./server.mjs";

const npmDir = process.env.LAL_SERVE_NPM_DIR;
if (!npmDir) throw new Error("LAL_SERVE_NPM_DIR is not set (ctest sets it; scripts/fetch-test-data.sh fills it)");
const require = createRequire(path.join(npmDir, "node_modules", "noop.js"));
let openai;
try {
  openai = require("openai");
} catch (e) {
  throw new Error(`the openai package is not in ${npmDir}: run scripts/fetch-test-data.sh (${e.message})`);
}
const OpenAI = openai.OpenAI ?? openai.default ?? openai;

const KEY = "test-key-123";
const server = await startServer(["--api_key", KEY, "--max_concurrent", "1", "--max_queue", "1",
                                  "--max_body_bytes", "65536", "--user_header", "X-OpenWebUI-User-Id"]);
const client = new OpenAI({ apiKey: KEY, baseURL: server.url + "/v1", maxRetries: 0, timeout: 300000 });
const small = { model: "lal", max_tokens: 12, seed: 1 };

async function until(what, check, seconds = 60) {
  for (const end = Date.now() + seconds * 1000; Date.now() < end;) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

test("a streamed turn: thoughts as reasoning_content first, then the answer as content, with usage", async () => {
  const chunks = await collect(await client.chat.completions.create({
    ...small, user: "shape", stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: "光合成とは何ですか？" }],
  }));
  assert.ok(chunks.length > 3, `only ${chunks.length} chunks`);
  const id = chunks[0].id;
  assert.match(id, /^chatcmpl-/);
  for (const c of chunks) {
    assert.equal(c.id, id);
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.model, "lal");
    assert.equal(typeof c.created, "number");
    assert.ok(c.lal, "every chunk carries the lal extension");
    for (const key of ["stage", "kind", "origin"]) assert.equal(typeof c.lal[key], "string", key);
    assert.equal(typeof c.lal.t_ms, "number");
  }
  const withChoice = chunks.filter((c) => c.choices.length > 0);
  assert.equal(withChoice[0].choices[0].delta.role, "assistant");
  const firstThought = withChoice.findIndex((c) => c.choices[0].delta.reasoning_content);
  const firstAnswer = withChoice.findIndex((c) => c.choices[0].delta.content);
  assert.ok(firstThought >= 0, "no reasoning_content");
  assert.ok(firstAnswer >= 0, "no content");
  assert.ok(firstThought < firstAnswer, `reasoning_content (#${firstThought}) after content (#${firstAnswer})`);
  for (const c of withChoice) {
    const d = c.choices[0].delta;
    if (d.reasoning_content !== undefined) {
      assert.equal(d.reasoning, d.reasoning_content, "delta.reasoning mirrors delta.reasoning_content");
      assert.notEqual(c.lal.kind, "answer");
    }
    if (d.content) assert.equal(c.lal.kind, "answer");
  }
  const stages = new Set(withChoice.filter((c) => c.choices[0].delta.reasoning_content).map((c) => c.lal.stage));
  assert.ok(stages.size >= 2, `thought stages: ${[...stages]}`);
  const finishes = withChoice.filter((c) => c.choices[0].finish_reason);
  assert.equal(finishes.length, 1);
  // As OpenAI: the demo model's answer runs into max_tokens (12), so the turn ends with "length", not "stop".
  assert.equal(finishes[0].choices[0].finish_reason, "length");
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.prompt_tokens > 0);
  assert.ok(last.usage.completion_tokens > 0);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  const reasoning = withChoice.map((c) => c.choices[0].delta.reasoning_content ?? "").join("");
  assert.match(reasoning, /【直感】|【分析】|【探索】|【想起】/, "stage headings in the reasoning text");
});

test("a non-streamed turn has the answer, the reasoning, usage and the lal events", async () => {
  const r = await client.chat.completions.create({
    ...small, user: "plain", messages: [{ role: "system", content: "簡潔に" }, { role: "user", content: "二分探索の計算量は？" }],
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, "lal");
  assert.equal(r.choices.length, 1);
  const m = r.choices[0].message;
  assert.equal(m.role, "assistant");
  assert.ok(m.content.length > 0);
  assert.ok(m.reasoning_content.length > 0);
  assert.equal(m.reasoning, m.reasoning_content);
  assert.equal(r.choices[0].finish_reason, "length");  // the answer used all of max_tokens
  assert.ok(r.usage.completion_tokens > 0);
  assert.ok(Array.isArray(r.lal.events) && r.lal.events.length > 0);
  assert.ok(r.lal.events.some((e) => e.kind === "answer"));
  assert.equal(r.lal.events.filter((e) => e.kind === "answer").map((e) => e.text).join(""), m.content);
});

test("stop strings end the answer; sampling fields are accepted", async () => {
  const r = await client.chat.completions.create({
    ...small, user: "stopper", temperature: 0.5, top_p: 0.9, max_completion_tokens: 16,
    messages: [{ role: "user", content: "日本の首都はどこですか？" }],
  });
  const answer = r.choices[0].message.content;
  assert.ok(answer.length >= 2, `answer too short to cut: ${JSON.stringify(answer)}`);
  const stop = [...answer][1];
  const cut = await client.chat.completions.create({
    ...small, user: "stopper", temperature: 0.5, top_p: 0.9, max_completion_tokens: 16, stop: [stop],
    messages: [{ role: "user", content: "日本の首都はどこですか？" }],
  });
  assert.ok(!cut.choices[0].message.content.includes(stop), `'${stop}' in ${cut.choices[0].message.content}`);
  assert.equal(cut.choices[0].finish_reason, "stop");
});

test("reasoning_effort low answers after the intuition; high deliberates", async () => {
  const ask = (user, effort) => client.chat.completions.create({
    ...small, user, reasoning_effort: effort, messages: [{ role: "user", content: "オームの法則を説明してください。" }],
  });
  const low = await ask("effort-low", "low");
  const high = await ask("effort-high", "high");
  const analysed = (r) => r.lal.events.filter((e) => e.stage === "analysis" && e.kind === "thought").length;
  assert.ok(analysed(high) > 0, "high effort has an analysis");
  assert.ok(analysed(low) < analysed(high), `analysis chunks: low ${analysed(low)}, high ${analysed(high)}`);
  assert.ok(low.usage.completion_tokens < high.usage.completion_tokens,
    `tokens: low ${low.usage.completion_tokens}, high ${high.usage.completion_tokens}`);
  assert.ok(low.choices[0].message.content.length > 0);
});

test("two users never see each other's memories", async () => {
  const secret = "紫色のユニコーン";
  const ask = (user, content) => client.chat.completions.create({
    ...small, user, messages: [{ role: "user", content }],
  });
  const recalled = (r) => r.lal.events.filter((e) => e.stage === "recall").map((e) => e.text).join("");
  await ask("alice", `私の好きなものは${secret}です。覚えてね。`);
  const aliceAgain = await ask("alice", `私の好きなものは${secret}でしたね？`);
  const bob = await ask("bob", `私の好きなものは${secret}でしたね？`);
  // The positive control: alice's own earlier turn comes back to her (so the check below can fail).
  assert.match(recalled(aliceAgain) + aliceAgain.choices[0].message.reasoning_content, /覚えてね/);
  assert.doesNotMatch(recalled(bob), /覚えてね/, "bob recalled alice's turn");
  assert.doesNotMatch(bob.choices[0].message.reasoning_content, /覚えてね/);
});

test("without `user`, --user_header names the memory partition (Open WebUI's forwarded user id)", async () => {
  const ask = (id, content) => client.chat.completions.create(
    { ...small, messages: [{ role: "user", content }] }, { headers: { "X-OpenWebUI-User-Id": id } });
  const recalled = (r) => r.lal.events.filter((e) => e.stage === "recall").map((e) => e.text).join("") +
    r.choices[0].message.reasoning_content;
  await ask("owui-1", "秘密の合言葉は青いペンギンです。覚えてね。");
  assert.match(recalled(await ask("owui-1", "合言葉は青いペンギンでしたね？")), /覚えてね/);
  assert.doesNotMatch(recalled(await ask("owui-2", "合言葉は青いペンギンでしたね？")), /覚えてね/);
  await assert.rejects(client.chat.completions.create({ ...small, messages: [{ role: "user", content: "x" }] },
    { headers: { "X-OpenWebUI-User-Id": "x".repeat(300) } }), (e) => e.status === 400);
});

test("401 without the key or with a wrong one", async () => {
  const wrong = new OpenAI({ apiKey: "nope", baseURL: server.url + "/v1", maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create({ ...small, messages: [{ role: "user", content: "x" }] }),
    (e) => e.status === 401 && e.error?.type === "authentication_error");
  const res = await fetch(server.url + "/v1/models");
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, "invalid_api_key");
});

test("400 for malformed requests, with an OpenAI-style error naming the field", async () => {
  await assert.rejects(client.chat.completions.create({ ...small, messages: [] }),
    (e) => e.status === 400 && e.error?.param === "messages" && e.error?.type === "invalid_request_error");
  await assert.rejects(client.chat.completions.create({ ...small, temperature: "hot", messages: [{ role: "user", content: "x" }] }),
    (e) => e.status === 400 && e.error?.param === "temperature");
  await assert.rejects(client.chat.completions.create({ ...small, lal: { "modules.nobody.config.max_tokens": 3 },
    messages: [{ role: "user", content: "x" }] }), (e) => e.status === 400 && /nobody/.test(e.message));
  await assert.rejects(client.chat.completions.create({ ...small, model: "gpt-4o", messages: [{ role: "user", content: "x" }] }),
    (e) => e.status === 404 && e.error?.code === "model_not_found");
  const res = await fetch(server.url + "/v1/chat/completions", {
    method: "POST", headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" }, body: "{\"model\": ",
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.type, "invalid_request_error");
  assert.match(body.error.message, /not valid JSON/);
  const big = await fetch(server.url + "/v1/chat/completions", {
    method: "POST", headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "lal", messages: [{ role: "user", content: "あ".repeat(40000) }] }),
  });
  assert.equal(big.status, 413);
});

test("429 with Retry-After when the queue is full; the others complete", async () => {
  // One turn runs, one waits (--max_concurrent 1 --max_queue 1): of four at once, at least two are refused.
  const send = (i) => fetch(server.url + "/v1/chat/completions", {
    method: "POST", headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "lal", max_tokens: 24, user: `crowd-${i}`, messages: [{ role: "user", content: "TCPとUDPの違いは？" }] }),
  });
  const responses = await Promise.all([0, 1, 2, 3].map(send));
  const statuses = responses.map((r) => r.status);
  const refused = responses.filter((r) => r.status === 429);
  assert.ok(refused.length >= 2, `statuses ${statuses}`);
  assert.ok(statuses.filter((s) => s === 200).length >= 1, `statuses ${statuses}`);
  for (const r of refused) {
    assert.ok(Number(r.headers.get("retry-after")) >= 1);
    assert.equal((await r.json()).error.type, "rate_limit_error");
  }
  for (const r of responses.filter((r) => r.status === 200)) assert.ok((await r.json()).choices[0].message.content);
  // The client sees it as a RateLimitError. Two long turns fill the slot and the queue (however fast the model is),
  // then are abandoned: their disconnects cancel them.
  const abandon = new AbortController();
  const long = (i) => fetch(server.url + "/v1/chat/completions", {
    method: "POST", signal: abandon.signal, headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "lal", max_tokens: 4000, user: `long-${i}`, messages: [{ role: "user", content: "TCPとUDPの違いは？" }] }),
  }).catch(() => null);
  const held = long(9);
  const queued = long(10);
  await until("a full queue", async () => (await (await fetch(server.url + "/health")).json()).queued === 1);
  await assert.rejects(client.chat.completions.create({ ...small, user: "late", messages: [{ role: "user", content: "x" }] }),
    (e) => e.status === 429);
  abandon.abort();
  await Promise.all([held, queued]);
  await until("the slot freed", async () => (await (await fetch(server.url + "/health")).json()).running === 0);
});

test("models, health and Prometheus metrics", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["lal"]);
  const health = await (await fetch(server.url + "/health")).json();
  assert.equal(health.status, "ok");
  const metrics = await (await fetch(server.url + "/metrics", { headers: { Authorization: `Bearer ${KEY}` } })).text();
  for (const name of ["lal_requests_total", "lal_completion_tokens_total", "lal_time_to_first_thought_seconds_bucket",
                      "lal_time_to_answer_seconds_count", "lal_queue_depth", "lal_turns_running"])
    assert.match(metrics, new RegExp("^" + name, "m"), name);
  const count = Number(metrics.match(/^lal_time_to_first_thought_seconds_count (\d+)/m)[1]);
  assert.ok(count >= 3, `first-thought count ${count}`);
});

async function disconnectedTurns() {
  const m = await (await fetch(server.url + "/metrics", { headers: { Authorization: `Bearer ${KEY}` } })).text();
  return Number((m.match(/^lal_turns_total\{outcome="disconnected"\} (\d+)/m) || [0, 0])[1]);
}

test("a client that disconnects cancels its turn", async () => {
  const before = await disconnectedTurns();
  const controller = new AbortController();
  const res = await fetch(server.url + "/v1/chat/completions", {
    method: "POST", signal: controller.signal,
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "lal", stream: true, max_tokens: 400, user: "leaver",
                           messages: [{ role: "user", content: "再帰関数とは何ですか？" }] }),
  });
  const reader = res.body.getReader();
  await reader.read();
  controller.abort();
  let disconnected = before;
  for (let i = 0; i < 100 && disconnected === before; ++i) {
    await new Promise((r) => setTimeout(r, 100));
    disconnected = await disconnectedTurns();
  }
  assert.equal(disconnected, before + 1);
  // The slot is free again: a new turn runs.
  const r = await client.chat.completions.create({ ...small, user: "leaver", messages: [{ role: "user", content: "x" }] });
  assert.ok(r.choices[0].message.content.length > 0);
});

test("SIGTERM: a running turn finishes, new connections are refused, exit 0", async () => {
  const stream = await client.chat.completions.create({
    model: "lal", max_tokens: 48, user: "last", stream: true, messages: [{ role: "user", content: "TCPとUDPの違いは？" }],
  });
  const chunks = [];
  let signalled = false;
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (!signalled) {
      signalled = true;
      const stopped = server.stop();
      await new Promise((r) => setTimeout(r, 300));
      await assert.rejects(fetch(server.url + "/health"), "the listener is closed after SIGTERM");
      server.stopped = stopped;
    }
  }
  assert.ok(chunks.some((c) => c.choices[0]?.delta?.content), "the answer still arrived");
  assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason).at(-1).choices[0].finish_reason, "length");
  const { code, stdout } = await server.stopped;
  assert.equal(code, 0);
  assert.match(stdout, /lal serve: stopped/);
});
