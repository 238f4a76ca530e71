// llama.cpp's log-probabilities (node-llama-cpp 3.21.1, CPU, temperature 0 = its softmax at temperature 1) for the
// next token after every position from --from on, the ids evaluated one call per position after a prompt prefill:
//   node llama_logprobs.mjs MODEL.gguf --ids 1,2,3,... [--from N] [--kv F32|F16|BF16|default] [--fa auto|on|off] [--threads 2] [--top 256]
// Prints one JSON line per position: {"position": P, "token": greedy choice, "logprobs": {token: logprob}} with the
// --top most likely tokens. The first position's are from the prefill of ids[0..from], later ones from decode steps.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const argv = process.argv.slice(2);
const opt = {ids: null, from: -1, kv: "F32", fa: "auto", threads: 2, top: 256};
const modelPath = argv.shift();
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, "")] = argv[i + 1];
if (!opt.ids) throw new Error("--ids is required");
const ids = opt.ids.split(",").map(Number);
const from = Number(opt.from) < 0 ? ids.length - 1 : Number(opt.from);
const llama = await getLlama({gpu: false, build: "never", maxThreads: Number(opt.threads), logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const ctx = await model.createContext({contextSize: 1024, batchSize: 512, sequences: 1, flashAttention: opt.fa === "auto" ? "auto" : opt.fa === "on",
    threads: {ideal: Number(opt.threads), min: Number(opt.threads)},
    ...(opt.kv === "default" ? {} : {experimentalKvCacheKeyType: opt.kv, experimentalKvCacheValueType: opt.kv})});
const seq = ctx.getSequence();
let position = from;
const gen = seq.evaluateWithMetadata(ids.slice(0, from + 1), {probabilities: true}, {temperature: 0, yieldEogToken: true});
let step = await gen.next();
while (!step.done) {
    const top = {};
    for (const [t, p] of [...step.value.probabilities.entries()].slice(0, Number(opt.top))) top[t] = Math.log(p);
    console.log(JSON.stringify({position, token: step.value.token, logprobs: top}));
    if (++position >= ids.length) break;
    step = await gen.next(ids[position]);  // feed the given id instead of the greedy one
}
await gen.return();
await ctx.dispose();
await model.dispose();
await llama.dispose();
