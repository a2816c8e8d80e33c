// Drives lore's chat page in a real browser: node chat.mjs URL SCREENSHOT.png
// Types a question, waits for the streamed answer, opens a citation, keeps a screenshot.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.LORE_CHROMIUM || "/usr/bin/chromium";
const question = process.env.LORE_QUESTION || "What kind of robots do you build?";

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
try {
  // A phone-sized window: the page must work there.
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("persona-name").textContent !== "lore", null, { timeout: 10000 });
  const name = await page.textContent("#persona-name");
  const openers = await page.locator("#openers button").count();
  await page.fill("#message", question);
  await page.click("#send");
  const answer = page.locator('.turn.assistant[data-state="done"]').first();
  await answer.waitFor({ timeout: 20000 });
  const text = await answer.textContent();
  const notice = await answer.locator(".notice").textContent().catch(() => "");
  const cite = answer.locator("button.cite").first();
  await cite.click();
  await page.waitForSelector("#source:not([hidden])", { timeout: 5000 });
  const sourceTitle = await page.textContent("#source-title");
  const sourceText = await page.textContent("#source-text");
  await page.screenshot({ path: screenshot, fullPage: true });
  const session = await page.evaluate(() => localStorage.getItem("lore-session"));
  console.log(JSON.stringify({ name, openers, text, notice, sourceTitle, sourceText, session, errors }));
} finally {
  await browser.close();
}
