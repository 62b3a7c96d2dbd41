// Encodes a JSONL corpus with Hugging Face's tokenizers (Rust, through its Node binding) and
// prints {"mb_per_s": [...], ...} for each pass; optionally writes the ids as JSONL.
//   node bench_hf.mjs TOKENIZER_DIR CORPUS.jsonl PASSES [IDS_OUT.jsonl]
// Run it with TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 under taskset for one core.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

// The tokenizers package is installed in tests/text/node_modules (see run.sh).
const require = createRequire(new URL("../../tests/text/package.json", import.meta.url));
const { Tokenizer } = require("tokenizers");

const [dir, corpusPath, passes = "3", idsOut] = process.argv.slice(2);
const texts = readFileSync(corpusPath, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t), 0);
const tokenizer = Tokenizer.fromFile(join(dir, "tokenizer.json"));
const batch = 256;
const rates = [];
let tokens = 0;
let all = [];
for (let pass = 0; pass < Number(passes); ++pass) {
  tokens = 0;
  const keep = pass === 0 && idsOut;
  const start = process.hrtime.bigint();
  for (let i = 0; i < texts.length; i += batch) {
    const encodings = await tokenizer.encodeBatch(texts.slice(i, i + batch));
    for (const e of encodings) {
      const ids = e.getIds();
      tokens += ids.length;
      if (keep) all.push(ids);
    }
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rates.push(bytes / 1e6 / seconds);
}
if (idsOut) writeFileSync(idsOut, all.map((ids) => JSON.stringify({ ids })).join("\n") + "\n");
console.log(JSON.stringify({ bytes, tokens, mb_per_s: rates }));
