// Calendar: a content-calendar CSV read here (the columns `ai-director batch` reads), sent
// to POST /batch in chunks so progress shows, each row's result in a table, and the
// results as CSV with the columns of POST /batch?format=csv plus the calendar's date, as
// `ai-director batch` writes them.

import { postJSON } from "./api.js";
import { highlighted } from "./checks.js";
import { CsvError, formatCsv, parseCsv } from "./csv.js";
import { el, showError } from "./dom.js";
import { onLang, say, t } from "./i18n.js";

const fileInput = document.getElementById("calendar-file");
const runButton = document.getElementById("calendar-run");
const downloadButton = document.getElementById("calendar-download");
const summary = document.getElementById("calendar-summary");
const progressRow = document.getElementById("calendar-progress-row");
const progress = document.getElementById("calendar-progress");
const progressText = document.getElementById("calendar-progress-text");
const errorBox = document.getElementById("calendar-error");
const table = document.getElementById("calendar-table");

// As app/batch.py reads a calendar: task names, each task's own field, the optional columns it takes.
const TASK_NAMES = { caption: "caption", "adapt-voice": "adapt_voice", adapt_voice: "adapt_voice", brief: "brief" };
const INPUT = { caption: "context", adapt_voice: "message", brief: "objectives" };
const OPTIONAL = {
  caption: ["platform", "tone", "adapter"], adapt_voice: ["platform", "tone", "adapter"],
  brief: ["platform", "audience", "adapter"],
};
const PLATFORMS = ["instagram", "facebook", "tiktok", "x", "line"];
// POST /batch?format=csv's columns (app/batch.py COLUMNS), after the calendar's date.
const COLUMNS = ["date", "index", "task", "brand", "platform", "input", "text", "on_brand", "score", "reasons",
  "finish_reason", "error_code", "error_message"];
const CHUNK = 20; // rows per request: the bar moves every chunk; the server takes 200 by default

let calendar = null; // {name, rows: [{number, date, item}]}
let done = []; // [{row, result}] in calendar order

class CalendarError extends Error {
  constructor(key, vars) {
    super(t(key, vars));
  }
}

/** The calendar's rows as batch items; a row that cannot be one names itself. */
function readCalendar(text) {
  let records;
  try {
    records = parseCsv(text);
  } catch (error) {
    if (error instanceof CsvError) throw new CalendarError("cal.err.quote");
    throw error;
  }
  const header = (records.shift() || []).map((name) => name.trim().toLowerCase());
  const missing = ["brand", "task"].filter((name) => !header.includes(name));
  if (missing.length) throw new CalendarError("cal.err.columns", { missing: missing.join(", ") });
  const rows = [];
  records.forEach((record, i) => {
    const cells = Object.fromEntries(header.map((name, j) => [name, (record[j] || "").trim()]));
    if (Object.values(cells).some(Boolean)) rows.push({ number: i + 2, date: cells.date || "", item: item(i + 2, cells) });
  });
  if (!rows.length) throw new CalendarError("cal.err.empty");
  return rows;
}

function item(row, cells) {
  const task = TASK_NAMES[cells.task.toLowerCase()];
  if (!task) throw new CalendarError("cal.err.task", { row, task: cells.task });
  if (!cells.brand) throw new CalendarError("cal.err.brand", { row });
  const field = INPUT[task];
  if (!cells[field]) throw new CalendarError("cal.err.input", { row, task: task.replace("_", "-"), field });
  const given = field === "objectives" // one per line of the cell, or separated by ";"
    ? cells[field].split(/\r?\n|;/).map((s) => s.trim()).filter(Boolean)
    : cells[field];
  const out = { task, brand: cells.brand, [field]: given };
  for (const name of OPTIONAL[task]) if (cells[name]) out[name] = cells[name];
  if (out.platform) {
    out.platform = out.platform.toLowerCase();
    if (!PLATFORMS.includes(out.platform)) {
      throw new CalendarError("cal.err.platform", { row, platform: cells.platform, platforms: PLATFORMS.join(", ") });
    }
  }
  return out;
}

const inputOf = (it) => [].concat(it[INPUT[it.task]]).join("; ");

function tableRow({ row, result }) {
  const checks = result.checks;
  const verdict = checks
    ? [el("span", { class: `badge ${checks.on_brand ? "pass" : "fail"}` },
      `${t(checks.on_brand ? "badge.pass" : "badge.fail")} · ${Math.round(checks.score * 100)}%`),
    checks.reasons.length ? el("ul", { class: "small" }, checks.reasons.map((r) => el("li", {}, r))) : null]
    : [el("span", { class: "badge fail" }, `${result.status} ${result.error.code}`)];
  return el("tr", { "data-on-brand": checks ? String(checks.on_brand) : null, "data-error": result.error ? result.error.code : null },
    el("td", {}, row.number), el("td", {}, row.date),
    el("td", {}, result.brand || row.item.brand),
    el("td", {}, t(`task.${row.item.task.replace("_", "-")}`), row.item.platform ? el("div", { class: "muted small" }, row.item.platform) : null),
    el("td", { class: "cell-input" }, inputOf(row.item)),
    el("td", { class: "cell-text" }, checks ? highlighted(result.text, checks) : el("span", { class: "error-text" }, result.error.message)),
    el("td", { class: "cell-checks" }, verdict));
}

function renderTable() {
  table.hidden = !done.length;
  table.tBodies[0].replaceChildren(...done.map(tableRow));
}

function showProgress(count, total) {
  progressRow.hidden = false;
  progress.max = total;
  progress.value = count;
  say(progressText, "cal.progress", { done: count, total });
}

/** Item errors of a refused chunk ("items[3].context") named by their calendar rows. */
function byRow(error, rows) {
  const message = error.message.replace(/items\[(\d+)\]/g, (_, i) => `${t("cal.col.row")} ${rows[Number(i)]?.number ?? i}`);
  return new Error(message);
}

async function run() {
  const rows = calendar.rows;
  done = [];
  renderTable();
  showError(errorBox, null);
  runButton.disabled = downloadButton.disabled = fileInput.disabled = true;
  showProgress(0, rows.length);
  let size = CHUNK;
  try {
    for (let start = 0; start < rows.length;) {
      const chunk = rows.slice(start, start + size);
      let body;
      try {
        body = await postJSON("batch", { items: chunk.map((r) => r.item) });
      } catch (error) {
        if (error.status === 422 && error.param === "items" && size > 1) { // over AI_DIRECTOR_MAX_BATCH_ITEMS
          size = Math.max(1, Math.floor(chunk.length / 2));
          continue;
        }
        throw byRow(error, chunk);
      }
      body.results.forEach((result, i) => done.push({ row: chunk[i], result: { ...result, index: start + i } }));
      start += chunk.length;
      renderTable();
      showProgress(start, rows.length);
    }
    const failed = done.filter(({ result }) => result.error).length;
    say(summary, "cal.finished", { ok: done.length - failed, failed });
  } catch (error) {
    showError(errorBox, error);
  } finally {
    runButton.disabled = fileInput.disabled = false;
    downloadButton.disabled = !done.length;
  }
}

const pyFloat = (x) => (Number.isInteger(x) ? x.toFixed(1) : String(x)); // 1.0, as Python writes it

function download() {
  const lines = done.map(({ row, result }) => {
    const checks = result.checks;
    const error = result.error || {};
    return [row.date, result.index, result.task, result.brand || row.item.brand, row.item.platform || "",
      inputOf(row.item), result.text ?? "", checks ? String(checks.on_brand) : "", checks ? pyFloat(checks.score) : "",
      checks ? checks.reasons.join("; ") : "", result.finish_reason || "", error.code || "", error.message || ""];
  });
  // A BOM, as the server's CSV has: Excel reads a CSV without one as the local code page.
  const blob = new Blob(["\ufeff", formatCsv([COLUMNS, ...lines])], { type: "text/csv;charset=utf-8" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `${calendar.name.replace(/\.csv$/i, "")}-results.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function load() {
  const file = fileInput.files[0];
  calendar = null;
  done = [];
  renderTable();
  progressRow.hidden = true;
  runButton.disabled = downloadButton.disabled = true;
  summary.textContent = "";
  showError(errorBox, null);
  if (!file) return;
  try {
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(await file.arrayBuffer());
    } catch {
      throw new CalendarError("cal.err.utf8"); // Thai in a legacy code page would arrive as gibberish
    }
    calendar = { name: file.name, rows: readCalendar(text) };
    say(summary, "cal.ready", { name: file.name, count: calendar.rows.length });
    runButton.disabled = false;
  } catch (error) {
    showError(errorBox, error);
  }
}

export function initCalendar() {
  fileInput.addEventListener("change", load);
  runButton.addEventListener("click", run);
  downloadButton.addEventListener("click", download);
  onLang(renderTable);
}
