// Writes a large mixed corpus as JSONL ({"text": ...} per document) for the tokenizer bench:
// English-like prose with a Zipfian vocabulary, Chinese and Japanese, Russian and Arabic, code,
// numbers, LaTeX, URLs, emoji (with ZWJ sequences), whitespace runs, and the hand-written test
// lines with special tokens inside. Deterministic (seeded).
//   node bench/tokenizer/make_corpus.mjs OUT.jsonl [megabytes, default 8]
import { writeFileSync } from "node:fs";
import { corpus } from "../../tests/text/corpus.mjs";

const [out, megabytes = "8"] = process.argv.slice(2);
if (!out) {
  console.error("usage: node make_corpus.mjs OUT.jsonl [megabytes]");
  process.exit(1);
}

let seed = 12345;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (list) => list[Math.floor(random() * list.length)];
// Index with a Zipf-like skew: small indices are much more frequent.
const zipf = (n) => Math.min(n - 1, Math.floor(Math.exp(random() * Math.log(n + 1)) - 1));

function vocabulary(count, syllables, minParts, maxParts) {
  const words = [];
  for (let i = 0; i < count; ++i) {
    const parts = minParts + Math.floor(random() * (maxParts - minParts + 1));
    let w = "";
    for (let j = 0; j < parts; ++j) w += pick(syllables);
    words.push(w);
  }
  return words;
}
const latin = vocabulary(30000, ["th", "e", "an", "re", "in", "on", "at", "er", "st", "ing", "tion",
  "al", "com", "pre", "ly", "ous", "ent", "con", "ex", "de", "pro", "ma", "ri", "lo", "un", "ful"], 1, 4);
const cyrillic = vocabulary(8000, ["при", "вет", "ми", "ра", "ко", "то", "ни", "ста", "ель", "ов", "ий", "ка"], 1, 4);
const arabic = vocabulary(6000, ["ال", "مر", "حب", "ع", "لم", "كت", "اب", "سل", "ام", "ين", "ون"], 1, 4);
const hanzi = Array.from({ length: 3000 }, () => String.fromCodePoint(0x4e00 + Math.floor(random() * 0x5000)));
const kana = Array.from("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコサシスセソタチツテト");
const emoji = ["😀", "😂", "👍", "🙏", "🎉", "❤️", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇯🇵", "🤖", "🔥"];
const testLines = corpus();
const punctuation = [". ", ", ", "; ", ": ", "! ", "? ", " (", ") ", " — ", "\n", "\n\n", " \"", "\" "];

function prose(words, length, separator = " ") {
  let s = "";
  while (s.length < length) {
    let w = words[zipf(words.length)];
    if (random() < 0.08) w = w[0].toUpperCase() + w.slice(1);
    s += w + (random() < 0.12 ? pick(punctuation) : separator);
  }
  return s;
}
function cjk(length) {
  let s = "";
  while (s.length < length) {
    s += hanzi[zipf(hanzi.length)];
    if (random() < 0.2) s += kana[zipf(kana.length)];
    if (random() < 0.06) s += pick(["，", "。", "、", "「", "」", "！", "？", "\n"]);
    if (random() < 0.02) s += " DeepSeek-V3 " + Math.floor(random() * 1000);
  }
  return s;
}
function code(length) {
  const lines = ["def f(x, y):", "\treturn x * y + 1", "for (int i = 0; i < n; ++i) {", "    sum += a[i];",
    "}", "if (ptr == nullptr) return -1;", "const auto& [key, value] = *it;", "# comment: TODO fix",
    "    self.weight = nn.Parameter(torch.zeros(d_model, d_ff))", "\t\tx = np.array([1.5, 2.25, 3.125])",
    "import os, sys", "std::vector<std::string> parts;", "  \"name\": \"whale\", \"version\": 3,"];
  let s = "";
  while (s.length < length) s += pick(lines) + (random() < 0.9 ? "\n" : "\n\n");
  return s;
}
function mixed(length) {
  let s = "";
  while (s.length < length) {
    const r = random();
    if (r < 0.2) s += Math.floor(random() * 1e9) + " ";
    else if (r < 0.3) s += pick(emoji) + " ";
    else if (r < 0.4) s += "$\\frac{" + pick(latin) + "}{" + Math.floor(random() * 100) + "}$ ";
    else if (r < 0.5) s += "https://example.com/" + pick(latin) + "/" + Math.floor(random() * 1e4) + "?q=" + pick(latin) + " ";
    else if (r < 0.6) s += " ".repeat(1 + Math.floor(random() * 8)) + "\t".repeat(Math.floor(random() * 3)) + "\n".repeat(Math.floor(random() * 3));
    else s += pick(testLines) + " ";
  }
  return s;
}

const target = Number(megabytes) * 1e6;
let size = 0;
const documents = [];
while (size < target) {
  const length = 500 + Math.floor(random() * 4000);
  const r = random();
  let text;
  if (r < 0.45) text = prose(latin, length);
  else if (r < 0.65) text = cjk(length / 2);
  else if (r < 0.72) text = prose(cyrillic, length);
  else if (r < 0.77) text = prose(arabic, length);
  else if (r < 0.9) text = code(length);
  else text = mixed(length);
  documents.push(JSON.stringify({ text }));
  size += Buffer.byteLength(text);
}
writeFileSync(out, documents.join("\n") + "\n");
console.error(`${documents.length} documents, ${(size / 1e6).toFixed(1)} MB of text -> ${out}`);
