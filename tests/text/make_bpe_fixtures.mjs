// Checks the tokenizer whale trains from tests/text/bpe/corpus.* (committed as
// tests/text/bpe/expected/) with Hugging Face's tokenizers library, and writes the ids HF gives
// for the held-out documents: tests/text/bpe/heldout_ids.jsonl, {"ids": [...]} per line of
// heldout.jsonl. Run from the repository root after regenerating expected/ (see README.md):
//   npm install --prefix tests/text && node tests/text/make_bpe_fixtures.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "tokenizers";

const here = join(dirname(fileURLToPath(import.meta.url)), "bpe");
const tokenizer = Tokenizer.fromFile(join(here, "expected", "tokenizer.json"));
const docs = (file) =>
  readFileSync(join(here, file), "utf8").split("\n").filter((l) => l.length > 0)
    .map((l) => JSON.parse(l).text);

// Every training document and the held-out ones must come back unchanged from HF as well.
const training = [readFileSync(join(here, "corpus.txt"), "utf8"), ...docs("corpus.jsonl")];
const heldout = docs("heldout.jsonl");
let failures = 0;
for (const text of [...training, ...heldout]) {
  const ids = (await tokenizer.encode(text)).getIds();
  const back = await tokenizer.decode(ids, false);
  if (back !== text) {
    console.error("HF does not round-trip:", JSON.stringify(text).slice(0, 80));
    ++failures;
  }
}
let out = "";
for (const text of heldout) out += JSON.stringify({ ids: (await tokenizer.encode(text)).getIds() }) + "\n";
writeFileSync(join(here, "heldout_ids.jsonl"), out);
console.log(`vocabulary ${tokenizer.getVocabSize()}; ${training.length} training and ` +
            `${heldout.length} held-out documents; ${failures} round-trip failures`);
process.exit(failures ? 1 : 0);
