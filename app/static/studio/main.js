// The Studio page: tabs, the language toggle, the API-key dialog, and each part's start.

import { onUnauthorized, saveKey, storedKey } from "./api.js";
import { initBrand, loadBrandList } from "./brand.js";
import { initCalendar } from "./calendar.js";
import { initCheck } from "./check.js";
import { showError } from "./dom.js";
import { initGenerate, loadAdapters } from "./generate.js";
import { apply, onLang, setLang, t } from "./i18n.js";

const PLATFORMS = ["instagram", "facebook", "tiktok", "x", "line"];

function fillPlatforms() {
  for (const select of document.querySelectorAll(".platform-select")) {
    const chosen = select.value;
    select.replaceChildren(new Option(t("field.platform.none"), ""), ...PLATFORMS.map((p) => new Option(p, p)));
    select.value = chosen;
  }
}

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(on));
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
  }
}

// One dialog for every request that got 401: requests that fail together wait for one answer.
const dialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
const keyButton = document.getElementById("key-button");
let pending = null;

function askKey(wrong) {
  if (pending) return pending;
  document.getElementById("key-wrong").hidden = !wrong;
  keyInput.value = "";
  dialog.returnValue = "";
  dialog.showModal();
  pending = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      pending = null;
      const key = dialog.returnValue === "ok" ? keyInput.value.trim() : "";
      keyButton.hidden = !(key || storedKey());
      resolve(key || null);
    }, { once: true });
  });
  return pending;
}

async function start() {
  apply();
  fillPlatforms();
  onLang(fillPlatforms);
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => setLang(button.dataset.lang));
  }
  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  selectTab("generate");
  onUnauthorized(askKey);
  keyButton.hidden = !storedKey();
  keyButton.addEventListener("click", async () => {
    const key = await askKey(false);
    if (key) {
      saveKey(key);
      loadBrandList().catch((error) => showError(document.getElementById("brand-status"), error));
      loadAdapters().catch(() => {}); // the picker stays hidden: generation works without it
    }
  });
  initBrand();
  initGenerate();
  initCheck();
  initCalendar();
  document.body.dataset.ready = "true"; // the modules are wired: a test may start typing
  try {
    await loadBrandList(); // asks for the key at once when the server has one
  } catch (error) {
    showError(document.getElementById("brand-status"), error);
  }
  loadAdapters().catch(() => {}); // the picker stays hidden: generation works without it
}

start();
