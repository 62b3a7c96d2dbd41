// The multilingual test corpus: hand-written lines for each hard case, then seeded random
// mixtures of them. Deterministic: the same list on every run.

const handWritten = [
  // Plain English, contractions (the Qwen regex splits 's 't 're 've 'm 'll 'd, any case)
  "Hello world",
  "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ",
  "The quick brown fox jumps over the lazy dog.",
  "I'm sure you'll see it's what they'd've wanted, isn't it? WE'LL SEE. It'S O'Neil's.",
  "Don't  stop   me    now",
  " leading space",
  "  two leading spaces and trailing  ",
  "",
  " ",
  "\n",
  "\n\n\n",
  "\r\n",
  "a\r\nb\r\n\r\nc\n\r\n",
  "trailing newline\n",
  "trailing newlines\n\n\n",
  "mixed \t \n \r\n\t\t whitespace\n \n",
  "tabs\tbetween\t\twords\t",
  "    indented with spaces\n\tindented with a tab\n\t\t\tthree tabs",
  "x" + " ".repeat(40) + "y",
  " ".repeat(17),
  "\t".repeat(9) + "\n".repeat(5) + " ".repeat(3),
  // Digits: groups of 1–3 (V3) versus single digits (Qwen)
  "0",
  "12",
  "123",
  "1234",
  "12345678901234567890123456789012345678901234567890",
  "3.14159265358979323846264338327950288419716939937510",
  "Call +1 (555) 012-3456 or 555.012.3456 before 2024-12-26T09:30:00Z.",
  "1,000,000 and 1_000_000 and 1e-9 and 0x7fffffff and 0b1010",
  "Arabic-Indic ٠١٢٣٤٥٦٧٨٩ Devanagari ०१२३४५६७८९ fullwidth １２３４５",
  "Superscripts x² y³ fractions ½ ¾ ⅞ Roman Ⅻ ⅷ circled ① ⑳",
  // CJK and kana (the V3 CJK split), Korean (not in that range)
  "我爱北京天安门，天安门上太阳升。",
  "深度求索（DeepSeek）是一家人工智能公司。它发布了DeepSeek-V3模型，参数量为671B。",
  "日本語のテキストです。ひらがな、カタカナ、漢字が混ざっています。",
  "東京は日本の首都です。ｶﾀｶﾅ半角もあります。",
  "한국어 문장입니다. 안녕하세요!",
  "中文English混合123数字和标点！？",
  "《红楼梦》第一回：甄士隐梦幻识通灵，贾雨村风尘怀闺秀。",
  "𠀀𠀁𪚥 extension-B ideographs 𠮷野家",
  "龥龦 U+9FA5 is the last of the V3 CJK range, U+9FA6 is not",
  // Emoji: ZWJ sequences, skin tones, flags, keycaps, variation selectors
  "👋 Hello 🌍!",
  "👨‍👩‍👧‍👦 family, 👩🏽‍💻 technologist, 🏳️‍🌈 rainbow flag, 🏴‍☠️ pirate",
  "👍🏻👍🏼👍🏽👍🏾👍🏿",
  "🇺🇸🇨🇳🇯🇵🇩🇪🇫🇷🇬🇧",
  "1️⃣ 2️⃣ #️⃣ *️⃣",
  "❤️ ♥ ☺️ ✌🏾",
  "🧑‍🤝‍🧑🫶🏼🥹",
  "text😀text😃😄😁😆😅🤣😂",
  // Code
  "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n",
  "#include <cstdio>\nint main() {\n    std::printf(\"%d\\n\", 42);\n    return 0;\n}\n",
  "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product",
  "const x = arr.map((v) => v ** 2).filter(Boolean);",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%';",
  "if x!=y && z==w || !q { return; } else if (a<=b) {}",
  "$HOME/.config && ls -la | grep '^d' > /dev/null 2>&1",
  "<div class=\"main\"><p>Hello &amp; welcome</p></div>",
  "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
  "x $+<=>^`|~ y",
  "!!!???...,,,;;;:::---___+++===",
  "a.b,c;d:e!f?g'h\"i(j)k[l]m{n}o<p>q/r\\s|t@u#v$w%x^y&z*",
  "@user #hashtag $VAR %d ^_^ &nbsp; *bold* ~strike~ `code`",
  // LaTeX
  "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$",
  "\\begin{align} a^2 + b^2 &= c^2 \\\\ \\sum_{i=1}^{n} i &= \\frac{n(n+1)}{2} \\end{align}",
  "Let $f: \\mathbb{R}^n \\to \\mathbb{R}$ with $\\nabla f(x^*) = 0$.",
  // URLs and paths
  "https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/tokenizer.json?download=true#L10",
  "Visit http://example.com/path/to/page.html?a=1&b=2 or mailto:someone@example.org.",
  "C:\\Users\\Admin\\Documents\\file (1).txt and /usr/local/lib/libfoo.so.1.2.3",
  "ftp://user:pass@host:21/~dir/%20file",
  // Special tokens inside text
  "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜>",
  "text before<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>text after",
  "<think>\nLet me think step by step.\n</think>\n\nThe answer is 4.",
  "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
  "<｜fim▁begin｜>def f(x):<｜fim▁hole｜>\n    return y<｜fim▁end｜>",
  "<｜place▁holder▁no▁0｜><｜place▁holder▁no▁798｜><｜place▁holder▁no▁799｜>",
  "<｜▁pad▁｜> <|EOT|> <|im_start|>user<|im_end|> <|endoftext|>",
  "<｜begin▁of▁sentence｜<｜begin▁of▁sentence｜>>",
  "<｜User｜><｜User｜><｜Assistant｜>",
  "almost <｜User| and <|User｜> and ＜｜User｜＞",
  "<think></think><think>x</think>",
  "a <think> b </think> c",
  // Combining marks and normalization (NFC matters for Qwen)
  "café vs cafe\u0301 vs CAFE\u0301",
  "n\u0303 a\u0308 o\u0302\u0323 u\u031b\u0309",
  "Tiếng Việt có dấu: Nguyễn, Trần, Lê, Phạm, Hoàng.",
  "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da\u036b\u0357\u0364\u0365lgo",
  "\u212b \u2126 \u212a Angstrom, Ohm and Kelvin signs",
  "\u1100\u1161\u11a8 decomposed Hangul \u1112\u1161\u11ab\u1100\u1173\u11af",
  "\u0041\u030a \u00c5 \u0065\u0300\u0301 \u1e9b\u0323",
  "\u0958 \u0915\u093c devanagari nukta",
  "\u0fb2\u0f81 \u0f77 tibetan",
  "\u0300 starts with a combining grave",
  "\u0345\u0301\u0300 only marks",
  // RTL scripts and bidi controls
  "مرحبا بالعالم! هذا نص عربي.",
  "שלום עולם, זה טקסט בעברית.",
  "English then عربي then English again.",
  "\u202bRTL embedding\u202c and \u200fRLM\u200e LRM",
  "فارسی: سلام دنیا، حال شما چطور است؟",
  "اردو: یہ ایک جملہ ہے۔",
  // Other scripts
  "Привет, мир! Как дела?",
  "Γειά σου Κόσμε! Ελληνικά.",
  "नमस्ते दुनिया। यह हिंदी है।",
  "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
  "ሰላም ለዓለም",
  "გამარჯობა მსოფლიო",
  "Բարեւ աշխարհ",
  "ᚠᚢᚦᚨᚱᚲ runes and 𓀀𓀁 hieroglyphs and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
  // Characters newer than Unicode 14 (PCRE2 10.42's): emoji, letters, digits, symbols
  "new emoji 🩷🩷 🫨 🪽 🫎 🪿 🫩 🫟 x 🩷",
  "Kawi 𑼄𑼅𑼆 Nag Mundari 𞓐𞓑 digits 𞓰𞓱 Kaktovik 𝋀𝋁 Garay 𐵀𐵁 𐵊𐵋 x 𑼄x",
  "legacy computing 𜰀𜰁 ideographic description ⿼⿽ CJK strokes ㇤ letters ꟋꟌ",
  // Unusual whitespace and controls
  "a\u00a0b\u00a0\u00a0c non-breaking",
  "a\u3000b\u3000\u3000c ideographic space",
  "a\u180eb\u180e\u180ec mongolian vowel separator",
  "a\u0085b\u0085\u0085c next line",
  "a\u2028b\u2029c line and paragraph separators",
  "a\u200bb\u200c\u200dc zero-width",
  "a\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200ab",
  "a\u202fb\u205fc",
  "\ufeffbyte order mark",
  "bell\u0007 escape\u001b[31m red\u001b[0m nul-free controls\u001c\u001d\u001e\u001f",
  "\u000b vertical tab \u000c form feed",
  "a \n b \r c \t d \u000b e",
  "   \n   \n",
  " \u00a0 \u3000 ",
  // Fullwidth, symbols, currency, math
  "ＡＢＣ ａｂｃ！？ fullwidth",
  "€100 £50 ¥1000 ₹500 ₿0.01 ¢ $",
  "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x| ∑∏∫∮ ≤≥≠≈∞",
  "→←↑↓↔ ★☆♠♣♥♦ ©®™ §¶†‡•…",
  "«quotes» „Anführungszeichen“ “curly” ‘single’ 「括弧」『二重』",
  "— – ‐ ‑ ‒ dashes",
  "Mr. Smith's 3rd-place finish (at 12:30 p.m.) wasn't bad!",
  // Case-folding edge cases for (?i:'s ...)
  "it\u017f long s, 'ſ 'K Kelvin, 'ﬅ",
  "'S 'T 'RE 'VE 'M 'LL 'D 'Ll 'rE",
  // Long repeated runs
  "a".repeat(300),
  "ab".repeat(150),
  "=".repeat(120),
  "-".repeat(80) + "\n" + "#".repeat(80),
  "😀".repeat(40),
  "中".repeat(100),
  "1".repeat(100),
  "\u0301".repeat(20),
];

// A deterministic pseudo-random generator (mulberry32).
function generator(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const fragments = handWritten.filter((s) => s.length > 0 && s.length < 200);
const separators = [" ", "  ", "\n", "\t", "", "\r\n", " \n", "\n\n", "\u3000", ". ", ", ", "\u00a0"];
const atoms = [
  "the", "The", "DeepSeek", "模型", "テスト", "한국", "🙂", "👩‍🔬", "123", "4567", "3.5", "'s", "'ll",
  "é", "e\u0301", "<｜User｜>", "<think>", "</think>", "<｜end▁of▁sentence｜>", "\\frac{a}{b}",
  "https://x.y/z", "→", "٣", "½", "ü", "ß", "ﬁ", "Ω", "…", "``", "\"", "'", "(", ")", "{", "}",
  "\t", "    ", "\n", "  \n", "ا", "ש", "ก", "Я", "λ", "∑", "$", "%", "#", "@",
];

function randomLines(count, seed) {
  const random = generator(seed);
  const pick = (list) => list[Math.floor(random() * list.length)];
  const lines = [];
  for (let i = 0; i < count; ++i) {
    const parts = [];
    const n = 1 + Math.floor(random() * 12);
    for (let j = 0; j < n; ++j) {
      if (random() < 0.25) {
        // A slice of a hand-written line, cut at an arbitrary code point.
        const chars = Array.from(pick(fragments));
        const a = Math.floor(random() * chars.length);
        const b = a + 1 + Math.floor(random() * 30);
        parts.push(chars.slice(a, b).join(""));
      } else {
        parts.push(pick(atoms));
      }
      parts.push(pick(separators));
    }
    lines.push(parts.join(""));
  }
  return lines;
}

export function corpus() {
  return [...handWritten, ...randomLines(450, 20241226)];
}
