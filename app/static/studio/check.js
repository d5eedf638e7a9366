// Check my copy: any pasted text through POST /check, shown with the same badges and
// highlights as generated copy.

import { postJSON } from "./api.js";
import { chosenBrand } from "./brand.js";
import { highlighted, verdict } from "./checks.js";
import { showError } from "./dom.js";
import { onLang, t } from "./i18n.js";

const form = document.getElementById("check-form");
const errorBox = document.getElementById("check-error");
const result = document.getElementById("check-result");
const textBox = document.getElementById("check-text");
const checksBox = document.getElementById("check-checks");
const button = document.getElementById("check-button");

let shown = null; // {text, checks}, re-rendered when the language changes

function render() {
  if (!shown) return;
  textBox.replaceChildren(...highlighted(shown.text, shown.checks));
  checksBox.replaceChildren(...verdict(shown.checks));
}

async function check() {
  const brand = chosenBrand();
  const text = form.elements.namedItem("text").value;
  const platform = form.elements.namedItem("platform").value;
  if (!brand || !text.trim()) {
    return showError(errorBox, new Error(brand ? t("field.required", { field: t("check.text") }) : t("brand.pickFirst")));
  }
  showError(errorBox, null);
  button.disabled = true;
  try {
    const body = await postJSON("check", { brand: brand.name, text, ...(platform ? { platform } : {}) });
    shown = { text, checks: body.checks };
    result.hidden = false;
    render();
  } catch (error) {
    showError(errorBox, error);
  } finally {
    button.disabled = false;
  }
}

export function initCheck() {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    check();
  });
  onLang(render);
}
