// The brand picker: what is typed goes to GET /brands/{name}, the service's own resolution
// (Thai and Latin names, aliases, typos); a 404 offers its `suggestions` as buttons.

import { ApiError, getJSON } from "./api.js";
import { debounce, el } from "./dom.js";
import { onLang, say, sayRaw, t } from "./i18n.js";

const input = document.getElementById("brand-input");
const list = document.getElementById("brand-list");
const status = document.getElementById("brand-status");
const suggestions = document.getElementById("brand-suggestions");
const profile = document.getElementById("brand-profile");

let chosen = null; // the GET /brands/{name} body of the brand in use
let asked = 0; // the latest lookup: answers to older ones are dropped
const listeners = [];

export const chosenBrand = () => chosen && chosen.brand;
export const onBrand = (fn) => listeners.push(fn);

function choose(body) {
  chosen = body;
  renderProfile();
  for (const fn of listeners) fn(chosenBrand());
}

export async function loadBrandList() {
  const body = await getJSON("brands");
  list.replaceChildren(...body.brands.flatMap((b) => [b.name, ...b.aliases]).map((name) => el("option", { value: name })));
  if (!chosen) say(status, "brand.count", { count: body.count });
  return body;
}

async function lookUp(query) {
  const mine = ++asked;
  suggestions.replaceChildren();
  if (!query) return;
  say(status, "brand.looking");
  try {
    const body = await getJSON(`brands/${encodeURIComponent(query)}`);
    if (mine !== asked) return;
    status.textContent = "";
    delete status.dataset.i18n;
    choose(body);
  } catch (error) {
    if (mine !== asked) return;
    if (!(error instanceof ApiError) || error.code !== "brand_not_found") {
      sayRaw(status, error.message);
      return;
    }
    say(status, "brand.notFound", { query });
    choose(null);
    if (error.suggestions.length) {
      suggestions.replaceChildren(el("span", { class: "small", "data-i18n": "brand.didYouMean" }, t("brand.didYouMean")),
        ...error.suggestions.map((name) => el("button", {
          type: "button", class: "chip-button", onclick: () => pick(name),
        }, name)));
    }
  }
}

export function pick(name) {
  input.value = name;
  return lookUp(name);
}

function section(label, content) {
  return el("div", { class: "profile-row" }, el("h3", {}, t(label)), content);
}

function renderProfile() {
  profile.hidden = !chosen;
  if (!chosen) return profile.replaceChildren();
  const { brand, brand_match: match } = chosen;
  const none = () => el("span", { class: "muted" }, t("profile.none"));
  const chips = (items, cls = "") => items.length
    ? el("div", { class: "chips" }, items.map((item) => el("span", { class: `chip ${cls}` }, item)))
    : none();
  profile.replaceChildren(
    el("div", {},
      el("p", { class: "profile-name", id: "brand-name" }, brand.name),
      el("p", { class: "muted small" }, [brand.industry, brand.aliases.join(" · ")].filter(Boolean).join(" — "))),
    el("p", { class: "match small" }, t(`brand.match.${match.method}`, { matched: match.matched, score: Math.round(match.score) })),
    brand.description ? el("p", { class: "profile-description" }, brand.description) : null,
    section("profile.tone", chips(brand.tone, "tone")),
    section("profile.audience", brand.target_audience ? el("p", {}, brand.target_audience) : none()),
    section("profile.hashtags", chips(brand.hashtags, "own")),
    section("profile.emoji", brand.emoji.length ? el("p", { class: "emoji-row" }, brand.emoji.join(" ")) : none()),
    section("profile.avoid", chips(brand.words_to_avoid, "avoid")),
  );
}

export function initBrand() {
  input.addEventListener("input", debounce(() => lookUp(input.value.trim()), 300));
  onLang(renderProfile);
}
