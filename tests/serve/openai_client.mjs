// The official openai npm client against whale serve, unchanged: chat and completions,
// streamed and not; reasoning_content for a model whose chat template thinks.
// usage: node openai_client.mjs NPM_DIR BASE_URL MODEL [REASONING_MODEL_BASE_URL REASONING_MODEL]
// The scripted models answer "OK" after "Assistant:"/":" and "ab</think>XY" after R1's prompt.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const [npmDir, baseURL, model, r1URL, r1Model] = process.argv.slice(2);
const require = createRequire(npmDir + "/package.json");
const { default: OpenAI } = await import(require.resolve("openai"));

const client = new OpenAI({ baseURL: baseURL + "/v1", apiKey: "unused", maxRetries: 0 });
const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }];

const models = await client.models.list();
assert.equal(models.data[0].id, model);

const chat = await client.chat.completions.create({ model, messages, max_tokens: 16, seed: 1 });
assert.equal(chat.object, "chat.completion");
assert.equal(chat.choices[0].message.content, "OK");
assert.equal(chat.choices[0].finish_reason, "stop");
assert.equal(chat.usage.completion_tokens, 2);
assert.ok(chat.usage.prompt_tokens > 0);

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 16, stream: true, stream_options: { include_usage: true },
});
let text = "", usage = null, finish = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
}
assert.equal(text, "OK");
assert.equal(finish, "stop");
assert.equal(usage.completion_tokens, 2);
assert.equal(usage.total_tokens, usage.prompt_tokens + 2);
assert.equal(typeof usage.prompt_cache_hit_tokens, "number");

const completion = await client.completions.create({ model, prompt: "Say:", max_tokens: 8 });
assert.equal(completion.choices[0].text, "OK");
const cstream = await client.completions.create({ model, prompt: "Say:", max_tokens: 8, stream: true });
text = "";
for await (const chunk of cstream) for (const c of chunk.choices) text += c.text;
assert.equal(text, "OK");

// Errors come back as the client's typed errors.
await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages }),
  (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
await assert.rejects(
  client.chat.completions.create({ model, messages: [] }),
  (e) => e instanceof OpenAI.BadRequestError && e.status === 400);

if (r1URL) {
  const r1 = new OpenAI({ baseURL: r1URL + "/v1", apiKey: "unused", maxRetries: 0 });
  const answer = await r1.chat.completions.create({ model: r1Model, messages, max_tokens: 32 });
  assert.equal(answer.choices[0].message.reasoning_content, "ab");
  assert.equal(answer.choices[0].message.content, "XY");
  const rs = await r1.chat.completions.create({ model: r1Model, messages, max_tokens: 32, stream: true });
  let reasoning = "";
  text = "";
  for await (const chunk of rs)
    for (const c of chunk.choices) {
      reasoning += c.delta.reasoning_content ?? "";
      text += c.delta.content ?? "";
    }
  assert.equal(reasoning, "ab");
  assert.equal(text, "XY");
}
console.log("openai client: all checks passed");
