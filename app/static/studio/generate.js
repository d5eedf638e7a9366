// Generate: one form per task; Generate streams (POST with stream: true), Compare asks
// for N candidates (`attempts`), Regenerate sends the last request again, Copy copies.

import { ApiError, getJSON, postJSON, stream } from "./api.js";
import { chosenBrand } from "./brand.js";
import { highlighted, verdict } from "./checks.js";
import { copyText, el, showError, toast } from "./dom.js";
import { onLang, say, t } from "./i18n.js";

const form = document.getElementById("generate-form");
const errorBox = document.getElementById("generate-error");
const result = document.getElementById("generate-result");
const status = document.getElementById("generate-status");
const textBox = document.getElementById("generate-text");
const checksBox = document.getElementById("generate-checks");
const candidatesBox = document.getElementById("generate-candidates");
const buttons = ["generate-button", "regenerate-button", "compare-button"].map((id) => document.getElementById(id));
const [generateButton, regenerateButton, compareButton] = buttons;

// Each task: its path, its own required field, and the optional fields its request takes.
const TASKS = {
  caption: { path: "caption", field: "context", optional: ["tone", "platform"] },
  "adapt-voice": { path: "adapt-voice", field: "message", optional: ["tone", "platform"] },
  brief: { path: "brief", field: "objectives", optional: ["audience", "platform"] },
};

let task = "caption";
let last = null; // {task, body} of the copy shown: what Regenerate sends again
let shown = null; // the answer shown: re-rendered when the language changes

function selectTask(name) {
  task = name;
  for (const button of document.querySelectorAll("[data-task]")) {
    if (button.tagName === "BUTTON") button.setAttribute("aria-pressed", String(button.dataset.task === name));
  }
  for (const set of form.querySelectorAll("fieldset")) {
    set.hidden = set.disabled = set.dataset.task !== name; // disabled: not read, not validated
  }
}

/** {task, body} from the active task's fields; throws a message to show when one is missing. */
function request() {
  const brand = chosenBrand();
  if (!brand) throw new Error(t("brand.pickFirst"));
  const { field, optional } = TASKS[task];
  const fields = form.querySelector(`fieldset[data-task="${task}"]`).elements;
  const value = (name) => (fields.namedItem(name) || form.elements.namedItem(name)).value.trim();
  const given = value(field);
  if (!given) throw new Error(t("field.required", { field: t(`field.${field}`) }));
  const body = { brand: brand.name };
  body[field] = field === "objectives" ? given.split("\n").map((s) => s.trim()).filter(Boolean) : given;
  for (const name of optional) if (value(name)) body[name] = value(name);
  if (adapterSelect.value) body.adapter = adapterSelect.value;
  return { task, body };
}

// The server's adapters (GET /adapters): a picker only when there is a choice beyond the
// default, e.g. one style adapter per agency, or a retrained one under test.
const adapterField = document.getElementById("adapter-field");
const adapterSelect = document.getElementById("adapter-select");
let adapterNames = [];

function fillAdapters() {
  const chosen = adapterSelect.value;
  const label = (name) => (name === "default" ? t("field.adapter.default") : name);
  adapterSelect.replaceChildren(
    ...adapterNames.map((name) => new Option(label(name), name === "default" ? "" : name)),
    new Option(t("field.adapter.none"), "none"));
  adapterSelect.value = chosen;
}

export async function loadAdapters() {
  const { adapters } = await getJSON("adapters");
  adapterNames = adapters.map((a) => a.name);
  if (!adapterNames.includes("default")) adapterNames.unshift("default");
  adapterField.hidden = adapterNames.length < 2;
  fillAdapters();
}

function busy(on) {
  for (const button of buttons) button.disabled = on;
  if (!on) regenerateButton.disabled = !last;
  form.setAttribute("aria-busy", String(on));
}

function render() {
  if (!shown) return;
  textBox.replaceChildren(...highlighted(shown.text, shown.checks));
  checksBox.replaceChildren(...verdict(shown.checks));
  candidatesBox.replaceChildren(...(shown.candidates || []).map((c, i) => el("article", {
    class: `candidate ${c.chosen ? "chosen" : ""}`, "data-on-brand": String(c.checks.on_brand),
  },
  el("header", {},
    el("strong", {}, t("gen.candidate", { n: i + 1 })),
    c.chosen ? el("span", { class: "badge pass" }, t("gen.chosen")) : null,
    el("span", { class: `badge ${c.checks.on_brand ? "pass" : "fail"}` },
      `${t(c.checks.on_brand ? "badge.pass" : "badge.fail")} · ${Math.round(c.checks.score * 100)}%`),
    el("button", { type: "button", class: "ghost small", onclick: () => copy(c.text) }, t("gen.copy"))),
  el("div", { class: "copy-text" }, highlighted(c.text, c.checks)),
  c.checks.reasons.length ? el("ul", { class: "small muted" }, c.checks.reasons.map((r) => el("li", {}, r))) : null)));
}

function finish(answer) {
  shown = answer;
  say(status, "gen.done", { tokens: answer.usage.completion_tokens, seed: answer.seed ?? "—" });
  render();
}

async function run(next, attempts = 1) {
  let req;
  try {
    req = next || request();
  } catch (error) {
    return showError(errorBox, error);
  }
  showError(errorBox, null);
  busy(true);
  shown = null;
  result.hidden = false;
  checksBox.replaceChildren();
  candidatesBox.replaceChildren();
  const written = document.createTextNode("");
  textBox.replaceChildren(written, el("span", { class: "caret", "aria-hidden": "true" }));
  textBox.dataset.deltas = "0";
  try {
    let answer;
    if (attempts > 1) {
      say(status, "gen.comparing", { n: attempts });
      answer = await postJSON(TASKS[req.task].path, { ...req.body, attempts });
    } else {
      say(status, "gen.writing");
      answer = await stream(TASKS[req.task].path, req.body, (delta) => {
        written.data += delta;
        textBox.dataset.deltas = String(Number(textBox.dataset.deltas) + 1);
      });
    }
    last = req;
    finish(answer);
  } catch (error) {
    result.hidden = !shown;
    textBox.replaceChildren(written);
    status.textContent = "";
    showError(errorBox, error instanceof ApiError && error.status === 0 ? new Error(t("gen.streamEnded")) : error);
  } finally {
    busy(false);
  }
}

async function copy(text) {
  await copyText(text);
  toast(t("gen.copied"));
}

export function initGenerate() {
  for (const button of document.querySelectorAll("button[data-task]")) {
    button.addEventListener("click", () => selectTask(button.dataset.task));
  }
  selectTask("caption");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  regenerateButton.addEventListener("click", () => run(last));
  compareButton.addEventListener("click", () => run(null, Number(document.getElementById("attempts").value)));
  document.getElementById("copy-button").addEventListener("click", () => shown && copy(shown.text));
  onLang(render);
  onLang(fillAdapters);
}
