// Hugging Face's BPE training on the same text, for bench/tokenizer/train.sh: a tokenizer with
// whale's trained tokenizer.json's pre-tokenizer (DeepSeek-V3's) and an empty byte-level BPE,
// trained on a plain text file by the Node binding's default BpeTrainer (vocab 30000,
// min_frequency 0; the binding cannot set them). Prints {seconds, mb_per_s, vocab}.
//   node train_hf.mjs WHALE_TOKENIZER_JSON CORPUS_TXT
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { Tokenizer } = await import(join(root, "tests/text/node_modules/tokenizers/index.js"));
const base = JSON.parse(readFileSync(process.argv[2], "utf8"));
base.model.merges = [];
base.model.vocab = Object.fromEntries(Object.entries(base.model.vocab).filter(([, id]) => id < 258));
const tokenizer = Tokenizer.fromString(JSON.stringify(base));
const start = performance.now();
tokenizer.train([process.argv[3]]);
const seconds = (performance.now() - start) / 1000;
const mb = readFileSync(process.argv[3]).length / 1e6;
console.log(JSON.stringify({ seconds, mb_per_s: mb / seconds, vocab: tokenizer.getVocabSize() }));
