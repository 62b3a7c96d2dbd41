// The web chat page in headless Chromium (Debian's, driven by playwright-core): type a
// message, send it, and see the streamed answer (and, for a thinking model, the reasoning
// apart) appear; then the stop button on a long reply.
// usage: node web_chat.mjs NPM_DIR CHROMIUM BASE_URL EXPECTED_ANSWER [EXPECTED_REASONING]
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const [npmDir, executablePath, baseURL, expectedAnswer, expectedReasoning] = process.argv.slice(2);
const require = createRequire(npmDir + "/package.json");
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e.message); process.exitCode = 1; });
  await page.goto(baseURL + "/");
  await page.waitForFunction(() => document.getElementById("model").textContent !== "…");
  await page.fill("#input", "Hi");
  await page.click("#send");
  const answer = page.locator(".msg.assistant .answer").last();
  await page.waitForSelector(".msg.assistant[data-done=true]", { timeout: 30000 });
  assert.equal(await answer.textContent(), expectedAnswer);
  if (expectedReasoning !== undefined) {
    const reasoning = page.locator(".msg.assistant details.reasoning").last();
    assert.equal(await reasoning.isHidden(), false);
    assert.equal(await reasoning.locator("div").textContent(), expectedReasoning);
  }
  const stats = await page.locator(".msg.assistant .stats").last().textContent();
  assert.match(stats, /tokens/);
  console.log("web chat: streamed answer shown:", JSON.stringify(await answer.textContent()));
} finally {
  await browser.close();
}
