// lore's chat page: streams answers from POST /v1/chat, shows citations, keeps the session id.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
const SESSION_KEY = "lore-session";
let busy = false;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function scrollDown() {
  log.scrollTop = log.scrollHeight;
}

function showSource(c) {
  $("source-title").textContent = `[${c.n}] ${c.title}`;
  $("source-id").textContent = `${c.source} · ${c.id}`;
  $("source-text").textContent = c.text || "";
  $("source").hidden = false;
}

// The answer text with each [n] made a button that opens the cited chunk.
function renderAnswer(bubble, text, citations) {
  bubble.textContent = "";
  const byN = new Map(citations.map((c) => [c.n, c]));
  const parts = text.split(/(\[\d+\])/);
  for (const part of parts) {
    const m = part.match(/^\[(\d+)\]$/);
    const c = m && byN.get(Number(m[1]));
    if (c) {
      const b = el("button", "cite", part);
      b.type = "button";
      b.dataset.n = String(c.n);
      b.addEventListener("click", () => showSource(c));
      bubble.appendChild(b);
    } else {
      bubble.appendChild(document.createTextNode(part));
    }
  }
  if (citations.length) {
    const list = el("div", "sources");
    for (const c of citations) {
      const b = el("button", "cite", `[${c.n}] ${c.title}`);
      b.type = "button";
      b.addEventListener("click", () => showSource(c));
      list.appendChild(b);
    }
    bubble.appendChild(list);
  }
}

function notice(bubble, answer) {
  let text = "";
  if (!answer.on_topic) text = "Off topic: this is outside what I know.";
  else if (answer.degraded) text = `The language model failed (${answer.degraded}); these are the best passages instead.`;
  else if (answer.extractive) text = "Quoted from the knowledge base (no language model is configured).";
  if (text) bubble.appendChild(el("span", "notice", text));
}

// Server-sent events from a fetch body: calls onEvent(name, data) for each.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

async function ask(message) {
  if (busy || !message.trim()) return;
  busy = true;
  $("send").disabled = true;
  // A new conversation cannot start while an answer is still being written into this one.
  $("new-conversation").disabled = true;
  $("openers").hidden = true;
  log.appendChild(el("div", "turn user", message));
  const bubble = el("div", "turn assistant");
  bubble.setAttribute("data-state", "streaming");
  log.appendChild(bubble);
  scrollDown();
  let text = "";
  try {
    const body = { message, stream: true };
    const session = localStorage.getItem(SESSION_KEY);
    if (session) body.session_id = session;
    const response = await fetch("/v1/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `HTTP ${response.status}`);
    }
    await readEvents(response, (name, data) => {
      const payload = JSON.parse(data);
      if (name === "token") {
        text += payload.text;
        bubble.textContent = text;
        scrollDown();
      } else if (name === "done") {
        localStorage.setItem(SESSION_KEY, payload.session_id);
        renderAnswer(bubble, payload.answer, payload.citations);
        notice(bubble, payload);
        bubble.setAttribute("data-state", "done");
      } else if (name === "error") {
        throw new Error(payload.error.message);
      }
    });
  } catch (e) {
    bubble.textContent = `Sorry, something went wrong: ${e.message}`;
    bubble.setAttribute("data-state", "error");
  } finally {
    busy = false;
    $("send").disabled = false;
    $("new-conversation").disabled = false;
    scrollDown();
  }
}

async function loadPersona() {
  try {
    const response = await fetch("/v1/persona");
    if (!response.ok) return;
    const p = await response.json();
    if (p.name) {
      $("persona-name").textContent = p.name;
      document.title = `${p.name} · lore`;
    }
    $("persona-description").textContent = p.description || "";
    const openers = $("openers");
    for (const q of p.openers || []) {
      const b = el("button", "", q);
      b.type = "button";
      b.addEventListener("click", () => ask(q));
      openers.appendChild(b);
    }
  } catch (_) {
    // The page works without the persona's name.
  }
}

async function restore() {
  const session = localStorage.getItem(SESSION_KEY);
  if (!session) return;
  const response = await fetch(`/v1/sessions/${encodeURIComponent(session)}`).catch(() => null);
  if (!response || !response.ok) {
    localStorage.removeItem(SESSION_KEY);
    return;
  }
  const s = await response.json();
  if (s.turns.length) $("openers").hidden = true;
  for (const t of s.turns) log.appendChild(el("div", `turn ${t.role}`, t.text));
  scrollDown();
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("message");
  const message = input.value;
  input.value = "";
  ask(message);
});
$("source-close").addEventListener("click", () => ($("source").hidden = true));
$("new-conversation").addEventListener("click", async () => {
  if (busy) return;
  const session = localStorage.getItem(SESSION_KEY);
  localStorage.removeItem(SESSION_KEY);
  if (session) await fetch(`/v1/sessions/${encodeURIComponent(session)}`, { method: "DELETE" }).catch(() => null);
  for (const t of Array.from(log.querySelectorAll(".turn"))) t.remove();
  $("openers").hidden = false;
});
loadPersona();
restore();
