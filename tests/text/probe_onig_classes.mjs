// For each code point given on stdin (a JSON array), prints [code point, category in Node's
// Unicode (L, M, N, P, S or other), class that Hugging Face's Oniguruma regexes give it (L, M,
// N, PS or other)] as a JSON array. Used by gen_unicode_patch.py. The Oniguruma class is read off
// the word ids of the DeepSeek-V3 and Qwen pre-tokenizers on small probe strings:
//   V3   "a"+c one word  → L or M (Qwen "a"+c one word → L, else M)
//   V3   "!"+c one word  → P or S
//   V3   c+"a" one word  → other (neither L, M, N, P nor S)
//   otherwise           → N
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "tokenizers";

const assets = new URL("../../../shared/assets/", import.meta.url).pathname;
const v3 = Tokenizer.fromFile(join(assets, "deepseek-v3-tokenizer", "tokenizer.json"));
const qwen = Tokenizer.fromFile(join(assets, "deepseek-r1-distill-qwen-tokenizer", "tokenizer.json"));
const codePoints = JSON.parse(readFileSync(0, "utf8"));

const oneWord = async (tokenizer, texts) =>
  (await tokenizer.encodeBatch(texts, { addSpecialTokens: false })).map((e) => {
    const words = e.getWordIds();
    return words.every((w) => w === words[0]);
  });
const category = (c) => {
  for (const top of ["L", "M", "N", "P", "S"]) if (new RegExp(`\\p{${top}}`, "u").test(c)) return top;
  return "other";
};

const out = [];
for (let i = 0; i < codePoints.length; i += 2000) {
  const chars = codePoints.slice(i, i + 2000).map((cp) => String.fromCodePoint(cp));
  const [afterA, qwenAfterA, afterBang, beforeA] = await Promise.all([
    oneWord(v3, chars.map((c) => "a" + c)),
    oneWord(qwen, chars.map((c) => "a" + c)),
    oneWord(v3, chars.map((c) => "!" + c)),
    oneWord(v3, chars.map((c) => c + "a")),
  ]);
  chars.forEach((c, k) => {
    let onig = "N";
    if (afterA[k]) onig = qwenAfterA[k] ? "L" : "M";
    else if (afterBang[k]) onig = "PS";
    else if (beforeA[k]) onig = "other";
    out.push([c.codePointAt(0), category(c), onig]);
  });
}
console.log(JSON.stringify(out));
