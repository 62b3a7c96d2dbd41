// Counts the documents whose ids agree between two JSONL files of {"ids": [...]}.
//   node compare_ids.mjs A.jsonl B.jsonl   → prints "matched N of M" (exit 1 on any difference)
import { readFileSync } from "node:fs";
const read = (p) => readFileSync(p, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).ids);
const [a, b] = process.argv.slice(2).map(read);
let matched = 0;
for (let i = 0; i < Math.max(a.length, b.length); ++i)
  if (a[i] && b[i] && a[i].length === b[i].length && a[i].every((v, k) => v === b[i][k])) ++matched;
console.log(`matched ${matched} of ${Math.max(a.length, b.length)}`);
process.exit(matched === a.length && a.length === b.length ? 0 : 1);
