// Writes tests/text/fixtures/<tokenizer>.jsonl: for every corpus line, the ids that Hugging
// Face's tokenizers library (Rust, through its Node binding) gives, its decode of them when
// that differs from the text, and its decode without special tokens when that differs again. Run from the repository root:
//   npm install --prefix tests/text && node tests/text/make_fixtures.mjs
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "tokenizers";
import { corpus } from "./corpus.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const assets = join(here, "..", "..", "..", "shared", "assets");
export const tokenizers = {
  "deepseek-v3": "deepseek-v3-tokenizer",
  "deepseek-r1": "deepseek-r1-tokenizer",
  "r1-distill-qwen": "deepseek-r1-distill-qwen-tokenizer",
};

mkdirSync(join(here, "fixtures"), { recursive: true });
const lines = corpus();
for (const [name, folder] of Object.entries(tokenizers)) {
  const tokenizer = Tokenizer.fromFile(join(assets, folder, "tokenizer.json"));
  let out = "";
  for (const text of lines) {
    const ids = (await tokenizer.encode(text)).getIds();
    const record = { text, ids };
    const decoded = await tokenizer.decode(ids, false);
    if (decoded !== text) record.decoded = decoded;
    const withoutSpecial = await tokenizer.decode(ids, true);
    if (withoutSpecial !== decoded) record.decoded_skip_special = withoutSpecial;
    out += JSON.stringify(record) + "\n";
  }
  writeFileSync(join(here, "fixtures", `${name}.jsonl`), out);
  console.log(`${name}: ${lines.length} lines, ${out.length} characters`);
}
