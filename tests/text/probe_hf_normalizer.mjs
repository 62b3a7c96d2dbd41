// Asks Hugging Face's own NFC/NFD normalizers (tokenizers, via Node) which Unicode data they
// use: its tables are older than Python's (Unicode 9 rather than 14), and whale's NFC must
// agree with HF's, not with the newest standard. Reads {"combining": [cp...],
// "decomposed": [cp...], "compositions": [[first, second, composite]...]} on stdin and prints
// {"combining": [bool...]  (HF gives the mark a non-zero combining class),
//  "nfd": [[cp...]...]     (HF's canonical decomposition),
//  "nfc_changes": [bool...] (HF's NFC changes the lone character),
//  "compositions": [bool...] (HF composes the pair)}. Used by gen_unicode_tables.py.
import { readFileSync } from "node:fs";
import { nfcNormalizer, nfdNormalizer } from "tokenizers";

const nfc = nfcNormalizer();
const nfd = nfdNormalizer();
const input = JSON.parse(readFileSync(0, "utf8"));
const chr = (cp) => String.fromCodePoint(cp);
const cps = (s) => Array.from(s, (c) => c.codePointAt(0));

// A mark has a non-zero class iff canonical ordering moves it against U+0334 (class 1) or
// U+0301 (class 230): "a"+c+U+0334 reorders when class(c) > 1, "a"+U+0301+c when class(c) is 1.
const reorders = (s) => nfd.normalizeString(s) !== s;
const combining = input.combining.map((cp) =>
  reorders("a" + chr(cp) + "\u0334") || reorders("a\u0301" + chr(cp)));
const decomposedNfd = input.decomposed.map((cp) => cps(nfd.normalizeString(chr(cp))));
const nfcChanges = input.decomposed.map((cp) => nfc.normalizeString(chr(cp)) !== chr(cp));
const compositions = input.compositions.map(([a, b, c]) => nfc.normalizeString(chr(a) + chr(b)) === chr(c));
console.log(JSON.stringify({ combining, nfd: decomposedNfd, nfc_changes: nfcChanges, compositions }));
