// Writes tests/text/fixtures/split_behaviors.json: small synthetic byte-level BPE tokenizers
// that exercise every Split behavior (with and without invert), String and Regex patterns,
// ByteLevel's add_prefix_space/use_regex, normalizers, and added tokens with lstrip/rstrip,
// with the ids Hugging Face's tokenizers library gives for random texts. The vocabulary holds
// every string of up to three characters over a small alphabet, so where a pre-tokenizer cuts
// shows in the ids. Run from the repository root:
//   npm install --prefix tests/text && node tests/text/make_split_fixtures.mjs
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "tokenizers";

const here = dirname(fileURLToPath(import.meta.url));

// GPT-2's byte-to-character map.
function byteLevelAlphabet() {
  const map = [];
  let next = 256;
  for (let b = 0; b < 256; ++b) {
    const printable = (b >= 33 && b <= 126) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    map.push(String.fromCodePoint(printable ? b : next++));
  }
  return map;
}
const alphabet = byteLevelAlphabet();
const letters = ["a", "b", "1", " ", "-"];
const spell = (s) => Array.from(Buffer.from(s, "utf8")).map((b) => alphabet[b]).join("");

const vocab = {};
alphabet.forEach((c, i) => (vocab[c] = i));
const merges = [];
let strings = letters.slice();
for (let length = 2; length <= 3; ++length) {
  const longer = [];
  for (const s of strings) for (const l of letters) longer.push(s + l);
  for (const s of longer) {
    vocab[spell(s)] = Object.keys(vocab).length;
    merges.push([spell(s.slice(0, -1)), spell(s.slice(-1))]);
  }
  strings = longer;
}
const model = { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
  end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges };

let seed = 7;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function texts(count) {
  const out = ["", " ", "-", "--", "a-b", " - ", "aa  bb--11", "1-1 1--a"];
  while (out.length < count) {
    let s = "";
    const n = Math.floor(random() * 17);
    for (let i = 0; i < n; ++i) s += letters[Math.floor(random() * letters.length)];
    out.push(s);
  }
  return out;
}

const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false };
const configs = [];
for (const pattern of [{ String: "-" }, { String: " " }, { Regex: "\\d+" }, { Regex: "a+" },
                       { Regex: "\\s*-\\s*" }, { Regex: "b" }])
  for (const behavior of ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"])
    for (const invert of [false, true])
      configs.push({ pre_tokenizer: { type: "Sequence", pretokenizers: [
        { type: "Split", pattern, behavior, invert }, byteLevel] } });
configs.push({ pre_tokenizer: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true } });
configs.push({ pre_tokenizer: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: false } });
configs.push({ pre_tokenizer: { type: "Sequence", pretokenizers: [
  { type: "Split", pattern: { String: "-" }, behavior: "Isolated", invert: false },
  { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true }] } });
configs.push({
  normalizer: { type: "Sequence", normalizers: [
    { type: "Replace", pattern: { String: "--" }, content: "-" }, { type: "Prepend", prepend: "b" }] },
  pre_tokenizer: { type: "Sequence", pretokenizers: [
    { type: "Split", pattern: { Regex: "-" }, behavior: "MergedWithNext", invert: false }, byteLevel] } });
const added = (id, content, flags) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
  normalized: false, special: false, ...flags });
configs.push({
  normalizer: { type: "Replace", pattern: { String: "b" }, content: "11" },
  added_tokens: [added(1000, "-a-", { lstrip: true, rstrip: true, special: true }),
                 added(1001, "111", { normalized: true }), added(1002, "a", { rstrip: true })],
  pre_tokenizer: { type: "Sequence", pretokenizers: [
    { type: "Split", pattern: { Regex: " " }, behavior: "Removed", invert: false }, byteLevel] } });

const cases = [];
for (const config of configs) {
  const json = { version: "1.0", truncation: null, padding: null, added_tokens: config.added_tokens ?? [],
    normalizer: config.normalizer ?? null, pre_tokenizer: config.pre_tokenizer, post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true }, model };
  const tokenizer = Tokenizer.fromString(JSON.stringify(json));
  const list = texts(30);
  const ids = [];
  for (const t of list) ids.push((await tokenizer.encode(t)).getIds());
  cases.push({ config, texts: list, ids });
}
writeFileSync(join(here, "fixtures", "split_behaviors.json"), JSON.stringify({ model, cases }) + "\n");
console.log(`${cases.length} tokenizers, ${cases.length * 30} texts`);
