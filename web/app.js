// lal serve — the thought timeline. Sends each message to /v1/chat/completions (streaming) and lays the turn's
// events out as lanes, one per stage, from the `lal` extension of each chunk: {stage, kind, origin, t_ms,
// confidence, emotion}. Plain browser JavaScript, no build step, no external resources.
"use strict";

const STAGE_NAMES = {
  intuition: "直感", recall: "想起", exploration: "探索", analysis: "分析", insight: "ひらめき",
  conclusion: "結論", emotion: "感情", answer: "答え",
};
const HEDGE_BELOW = 0.35; // chunks with a measured confidence below this are highlighted as hedged

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
const settings = { user: $("user"), effort: $("effort"), apikey: $("apikey") };
for (const [key, el] of Object.entries(settings)) {
  const saved = localStorage.getItem("lal." + key);
  if (saved !== null) el.value = saved;
  el.addEventListener("change", () => localStorage.setItem("lal." + key, el.value));
}
let modelId = "lal";

function headers() {
  const h = { "Content-Type": "application/json" };
  if (settings.apikey.value) h.Authorization = "Bearer " + settings.apikey.value;
  return h;
}

async function checkServer() {
  const status = $("status");
  try {
    const res = await fetch("v1/models", { headers: headers() });
    if (!res.ok) throw new Error((await res.json()).error.message);
    const models = await res.json();
    modelId = models.data[0].id;
    status.textContent = "モデル: " + modelId;
    status.className = "status ok";
  } catch (e) {
    status.textContent = "サーバー: " + e.message;
    status.className = "status bad";
  }
}

class TurnView {
  constructor(text) {
    this.el = $("turn-template").content.firstElementChild.cloneNode(true);
    this.el.querySelector(".user-message").textContent = text;
    this.lanesEl = this.el.querySelector(".lanes");
    this.lanes = new Map();
    conversation.appendChild(this.el);
    this.el.scrollIntoView({ block: "end" });
  }
  lane(stage, origin) {
    const key = stage === "answer" ? "answer" : stage + "/" + origin;
    let lane = this.lanes.get(key);
    if (!lane) {
      const el = document.createElement("details");
      el.className = "lane live";
      el.dataset.stage = stage;
      el.dataset.origin = origin || "";
      el.open = true;
      const summary = document.createElement("summary");
      summary.textContent = STAGE_NAMES[stage] || stage;
      if (origin && stage !== "answer") summary.title = origin;
      const t = document.createElement("span");
      t.className = "t";
      summary.appendChild(t);
      const text = document.createElement("div");
      text.className = "text";
      el.append(summary, text);
      // The answer stays last; thought lanes appear in the order they started.
      const answer = this.lanes.get("answer");
      this.lanesEl.insertBefore(el, answer && stage !== "answer" ? answer.el : null);
      lane = { el, text, t, first: null };
      this.lanes.set(key, lane);
    }
    return lane;
  }
  add(stage, origin, text, ext) {
    const lane = this.lane(stage, origin);
    if (ext && typeof ext.t_ms === "number") {
      if (lane.first === null) lane.first = ext.t_ms;
      lane.t.textContent = `${Math.round(lane.first)}–${Math.round(ext.t_ms)} ms`;
    }
    if (text) {
      if (ext && typeof ext.confidence === "number" && ext.confidence < HEDGE_BELOW && stage !== "answer") {
        const span = document.createElement("span");
        span.className = "hedge";
        span.title = "確信度 " + ext.confidence.toFixed(2);
        span.textContent = text;
        lane.text.appendChild(span);
      } else {
        lane.text.appendChild(document.createTextNode(text));
      }
    }
    if (ext && ext.last) lane.el.classList.remove("live");
  }
  emotion(e) {
    const el = this.el.querySelector(".emotion");
    el.hidden = false;
    el.textContent = `感情: ${e.label}  (valence ${e.valence.toFixed(2)}, arousal ${e.arousal.toFixed(2)})`;
    el.title = `dominance ${e.dominance.toFixed(2)}`;
  }
  finish(summary, usage) {
    for (const lane of this.lanes.values()) lane.el.classList.remove("live");
    const parts = [];
    if (summary && summary.first_output_ms != null) parts.push(`最初の思考 ${Math.round(summary.first_output_ms)} ms`);
    if (summary && summary.answer_done_ms != null) parts.push(`答え ${Math.round(summary.answer_done_ms)} ms`);
    if (summary && summary.strategy) parts.push(summary.strategy === "deep" ? "熟考" : "直答");
    if (usage) parts.push(`${usage.completion_tokens} tokens`);
    this.el.querySelector(".timing").textContent = parts.join(" · ");
    this.el.dataset.state = "done";
  }
  fail(message) {
    const p = document.createElement("div");
    p.className = "error";
    p.textContent = "エラー: " + message;
    this.el.appendChild(p);
    this.el.dataset.state = "error";
  }
}

let running = null; // the AbortController of the turn in flight: aborting closes the stream, the server cancels

async function send(text) {
  const view = new TurnView(text);
  running = new AbortController();
  const body = {
    model: modelId,
    messages: [{ role: "user", content: text }],
    stream: true,
    stream_options: { include_usage: true },
    user: settings.user.value || "web",
    reasoning_effort: settings.effort.value,
  };
  let res;
  try {
    res = await fetch("v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                               signal: running.signal });
  } catch (e) {
    view.fail(running.signal.aborted ? "中断しました" : e.message);
    return;
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error.message; } catch (_) { /* not JSON */ }
    view.fail(message);
    return;
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", summary = null, usage = null, failed = false;
  for (;;) {
    let step;
    try {
      step = await reader.read();
    } catch (e) {
      view.fail(running.signal.aborted ? "中断しました" : e.message);
      return;
    }
    const { value, done } = step;
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) { view.fail(chunk.error.message); failed = true; continue; }
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        const ext = chunk.lal;
        if (!choice) continue;
        if (choice.finish_reason) { summary = ext; continue; }
        const delta = choice.delta || {};
        if (ext && ext.emotion) view.emotion(ext.emotion);
        if (ext && ext.kind === "heading") continue; // headings are for plain clients' reasoning text
        if (delta.content) view.add("answer", "", delta.content, ext);
        else if (delta.reasoning_content) view.add(ext ? ext.stage : "analysis", ext ? ext.origin : "", delta.reasoning_content, ext);
      }
    }
  }
  if (!failed) view.finish(summary, usage);
}

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("message");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  $("send").disabled = true;
  $("stop").hidden = false;
  try { await send(text); } finally {
    $("send").disabled = false;
    $("stop").hidden = true;
    running = null;
    input.focus();
  }
});
$("stop").addEventListener("click", () => { if (running) running.abort(); });
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
settings.apikey.addEventListener("change", checkServer);
checkServer();
