// A bounded load test of whale serve over loopback, with node's own fetch (no packages):
// C concurrent clients each stream chat completions back to back for D seconds (requests
// running at the deadline finish, each at most MAX_TOKENS). Prints one JSON line: requests,
// failures (HTTP errors, broken or incomplete streams), completion tokens, aggregate
// tokens/s, and time-to-first-token percentiles.
// usage: node load.mjs BASE_URL MODEL CLIENTS SECONDS MAX_TOKENS [SYSTEM_PROMPT_MODE]
//   SYSTEM_PROMPT_MODE: "none" (default), "shared" (one long system prompt for every request),
//   "unique" (a long system prompt that differs per request: the prefix cache cannot help).
const [baseURL, model, clients, seconds, maxTokens, mode = "none"] = process.argv.slice(2);
const longPrompt = (tag) =>
  tag + " " + Array.from({ length: 60 }, (_, i) => `Rule ${i}: answer briefly and politely.`).join(" ");

let counter = 0;
async function one(client) {
  const messages = [];
  if (mode === "shared") messages.push({ role: "system", content: longPrompt("Shared.") });
  if (mode === "unique") messages.push({ role: "system", content: longPrompt(`Request ${counter++}.`) });
  messages.push({ role: "user", content: `Client ${client} says hello.` });
  const start = performance.now();
  const r = await fetch(baseURL + "/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      model, messages, max_tokens: Number(maxTokens), temperature: 1, stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!r.ok) throw new Error("HTTP " + r.status + " " + (await r.text()));
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", ttft = null, usage = null, done = false, finish = null;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buffer += decoder.decode(value, { stream: true });
    let at;
    while ((at = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") { done = true; continue; }
      const j = JSON.parse(data);
      if (j.usage) usage = j.usage;
      for (const c of j.choices) {
        if (ttft === null && (c.delta.content || c.delta.reasoning_content)) ttft = performance.now() - start;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
  }
  if (!done || !usage || !finish) throw new Error("incomplete stream");
  return { ttft, tokens: usage.completion_tokens, hit: usage.prompt_cache_hit_tokens, prompt: usage.prompt_tokens };
}

const results = [], errors = [];
const t0 = performance.now();
const deadline = t0 + Number(seconds) * 1000;
await Promise.all(Array.from({ length: Number(clients) }, async (_, client) => {
  while (performance.now() < deadline) {
    try { results.push(await one(client)); } catch (e) { errors.push(String(e.message || e)); }
  }
}));
const wall = (performance.now() - t0) / 1000;
const ttfts = results.map((r) => r.ttft).filter((t) => t !== null).sort((a, b) => a - b);
const pct = (p) => (ttfts.length ? ttfts[Math.min(ttfts.length - 1, Math.floor((p / 100) * ttfts.length))] : null);
const tokens = results.reduce((s, r) => s + r.tokens, 0);
console.log(JSON.stringify({
  clients: Number(clients), mode, seconds: Number(wall.toFixed(2)), requests: results.length,
  failures: errors.length, first_error: errors[0] ?? null, completion_tokens: tokens,
  tokens_per_second: Number((tokens / wall).toFixed(1)),
  ttft_ms_p50: pct(50) && Number(pct(50).toFixed(1)), ttft_ms_p99: pct(99) && Number(pct(99).toFixed(1)),
  prompt_tokens: results.reduce((s, r) => s + r.prompt, 0),
  cache_hit_tokens: results.reduce((s, r) => s + r.hit, 0),
}));
