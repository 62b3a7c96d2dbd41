// Writes a JSONL corpus ({"text": ...} per line) that puts every assigned code point (in Node's
// Unicode) through the contexts where pre-tokenizer classes and NFC matter: after a letter,
// after a space, before a combining accent, doubled, and after a digit. Feed it to run.sh's
// id comparison (or compare_ids.mjs) to check whale against Hugging Face exhaustively.
//   node bench/tokenizer/unicode_sweep.mjs OUT.jsonl
import { writeFileSync } from "node:fs";

const [out] = process.argv.slice(2);
const lines = [];
let line = "";
for (let cp = 0; cp < 0x110000; ++cp) {
  if (cp >= 0xd800 && cp <= 0xdfff) continue;
  const c = String.fromCodePoint(cp);
  if (/\p{Cn}/u.test(c)) continue;
  line += `a${c} ${c}${c}\u0301${c}${c}1${c}!${c}\u3000`;
  if (line.length > 400) {
    lines.push(JSON.stringify({ text: line }));
    line = "";
  }
}
lines.push(JSON.stringify({ text: line }));
writeFileSync(out, lines.join("\n") + "\n");
console.error(`${lines.length} lines -> ${out}`);
