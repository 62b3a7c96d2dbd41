// Writes tests/text/fixtures/chat_templates.jsonl: conversations rendered by the real
// chat_template strings of the DeepSeek-V3 and R1 tokenizer_config.json files with
// @huggingface/jinja (a Jinja implementation), the reference for whale's native rendering.
// Also prints each template's SHA-256, which whale recognizes templates by. Run from the
// repository root:
//   npm install --prefix tests/text && node tests/text/make_chat_fixtures.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = dirname(fileURLToPath(import.meta.url));
const assets = join(here, "..", "..", "..", "shared", "assets");

const call = (name, args) => ({ type: "function", function: { name, arguments: JSON.stringify(args) } });
const conversations = [
  [],
  [{ role: "user", content: "Hello!" }],
  [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Hi" }],
  [
    { role: "system", content: "Be brief." },
    { role: "system", content: "Answer in French." },
    { role: "user", content: "What is the capital of Italy?" },
  ],
  [
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3+3?" },
  ],
  [
    { role: "system", content: "" },
    { role: "user", content: "Solve x^2 = 4." },
    { role: "assistant", content: "<think>\nx could be 2 or -2.\n</think>\n\nx = ±2" },
    { role: "user", content: "Why?" },
    { role: "assistant", content: "<think>a</think>b</think>\nc" },
  ],
  [
    { role: "user", content: "What's the weather in Paris and Tokyo?" },
    { role: "assistant", content: null, tool_calls: [call("get_weather", { city: "Paris" })] },
    { role: "tool", content: "{\"temp\": 18}" },
    { role: "assistant", content: "Paris is at 18°C." },
  ],
  [
    { role: "system", content: "You can call tools." },
    { role: "user", content: "Weather in Paris and Tokyo?" },
    { role: "assistant", content: null,
      tool_calls: [call("get_weather", { city: "Paris" }), call("get_weather", { city: "東京" })] },
    { role: "tool", content: "18" },
    { role: "tool", content: "22" },
    { role: "assistant", content: "Paris 18°C, Tokyo 22°C." },
    { role: "user", content: "And Rome?" },
    { role: "assistant", content: null, tool_calls: [call("get_weather", { city: "Rome" })] },
    { role: "tool", content: "25" },
  ],
  [
    { role: "user", content: "Search, then summarize." },
    { role: "assistant", content: "<think>I should search.</think>Let me search.",
      tool_calls: [call("search", { q: "DeepSeek-V3" })] },
    { role: "tool", content: "DeepSeek-V3 is a 671B MoE model." },
    { role: "assistant", content: "It is a 671B mixture-of-experts model." },
  ],
  [
    { role: "user", content: "Unicode: 你好 👩‍💻 مرحبا\n\ttab <｜end▁of▁sentence｜> inside" },
    { role: "developer", content: "an unknown role is ignored" },
    { role: "assistant", content: "" },
    { role: "user", content: "  spaces  \n\n" },
  ],
];

const targets = { "deepseek-v3": "deepseek-v3-tokenizer", "deepseek-r1": "deepseek-r1-tokenizer" };
let out = "";
for (const [name, folder] of Object.entries(targets)) {
  const config = JSON.parse(readFileSync(join(assets, folder, "tokenizer_config.json"), "utf8"));
  const source = config.chat_template;
  console.log(`${name} chat_template sha256 ${createHash("sha256").update(source, "utf8").digest("hex")}`);
  const template = new Template(source);
  const bos = typeof config.bos_token === "string" ? config.bos_token : config.bos_token.content;
  const eos = typeof config.eos_token === "string" ? config.eos_token : config.eos_token.content;
  for (const messages of conversations)
    for (const add_generation_prompt of [false, true]) {
      const text = template.render({ messages, add_generation_prompt, bos_token: bos, eos_token: eos });
      out += JSON.stringify({ tokenizer: name, messages, add_generation_prompt, text }) + "\n";
    }
}
writeFileSync(join(here, "fixtures", "chat_templates.jsonl"), out);
