// The on-brand verdict (a CheckReport) as badges beside the copy, and the copy itself with
// the words to avoid and other brands' names highlighted where the report found them.

import { el } from "./dom.js";
import { t } from "./i18n.js";

// As the service compares (NFC, case-insensitive, runs of spaces as one), near enough.
const key = (s) => s.normalize("NFC").toLowerCase().split(/\s+/).join(" ");
const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The text as nodes, each term the report found wrapped in <mark class="hl-avoid|hl-leak">. */
export function highlighted(text, report) {
  const source = text.normalize("NFC");
  const terms = new Map(); // key -> [class, title]
  for (const word of report.words_to_avoid_found) terms.set(key(word), ["hl-avoid", t("check.avoid")]);
  for (const other of report.other_brands) {
    for (const label of other.found) terms.set(key(label), ["hl-leak", other.brand]);
  }
  const found = [...terms.keys()].filter(Boolean).sort((a, b) => b.length - a.length); // longest first
  if (!found.length) return [source];
  const pattern = new RegExp(found.map((k) => escapeRegExp(k).replace(/ /g, "\\s+")).join("|"), "giu");
  const nodes = [];
  let last = 0;
  for (const match of source.matchAll(pattern)) {
    const [cls, title] = terms.get(key(match[0])) || ["hl-leak", ""];
    nodes.push(source.slice(last, match.index), el("mark", { class: cls, title }, match[0]));
    last = match.index + match[0].length;
  }
  nodes.push(source.slice(last));
  return nodes;
}

function row(name, state, title, ...body) {
  const badge = el("span", { class: `badge ${state}` }, t(`badge.${state}`));
  return el("li", { class: `check ${state}`, "data-check": name }, badge, el("div", {}, el("strong", {}, title), ...body));
}

const chips = (items, cls = "") => el("span", { class: "chips" }, items.map((item) => el("span", { class: `chip ${cls}` }, item)));

function bar(value, limit) {
  const share = limit ? Math.min(1, value / limit) : 0;
  const fill = el("span", { class: "meter-fill" });
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  return el("span", {
    class: `meter ${value > limit ? "over" : ""}`, role: "meter",
    "aria-valuemin": 0, "aria-valuemax": limit, "aria-valuenow": value,
  }, fill);
}

function platformRow(p) {
  if (!p) return row("platform_limit", "info", t("check.platform", { platform: "—" }), el("p", {}, t("check.platform.none")));
  const tags = p.hashtag_limit == null
    ? t("check.platform.tagsFree", { count: p.hashtag_count })
    : t("check.platform.tags", { count: p.hashtag_count, limit: p.hashtag_limit });
  return row("platform_limit", p.within_limit ? "pass" : "fail", t("check.platform", { platform: p.name }),
    bar(p.length, p.limit), el("p", { class: "small" }, t("check.platform.length", { length: p.length, limit: p.limit }), " · ", tags));
}

/** The verdict and one row per check, as nodes for a .checks container. */
export function verdict(report) {
  const state = report.on_brand ? "pass" : "fail";
  const head = el("div", { class: `verdict ${state}`, "data-on-brand": String(report.on_brand) },
    el("span", { class: "verdict-label" }, t(`verdict.${state}`)),
    el("span", { class: "small" }, t("verdict.score", { score: Math.round(report.score * 100) })));
  const thaiFailed = report.reasons.some((r) => r.startsWith("Thai ratio")); // the service's own reason
  const list = el("ul", { class: "check-list" },
    row("brand_mentioned", report.brand_mentioned ? "pass" : "fail", t("check.brand"),
      el("p", {}, t(report.brand_mentioned ? "check.brand.pass" : "check.brand.fail"))),
    row("hashtags", report.hashtags_brand.length ? "pass" : "info", t("check.hashtags"),
      report.hashtags_brand.length || report.hashtags_new.length
        ? el("p", {},
          report.hashtags_brand.length ? [t("check.hashtags.own"), " ", chips(report.hashtags_brand, "own"), " "] : [],
          report.hashtags_new.length ? [t("check.hashtags.new"), " ", chips(report.hashtags_new)] : [])
        : el("p", {}, t("check.hashtags.none"))),
    row("words_to_avoid", report.words_to_avoid_found.length ? "fail" : "pass", t("check.avoid"),
      report.words_to_avoid_found.length
        ? el("p", {}, t("check.avoid.fail"), " ", chips(report.words_to_avoid_found, "hl-avoid"))
        : el("p", {}, t("check.avoid.pass"))),
    row("other_brand", report.other_brands.length ? "fail" : "pass", t("check.others"),
      report.other_brands.length
        ? el("p", {}, t("check.others.fail"), " ",
          chips(report.other_brands.map((o) => (o.found.join() === o.brand ? o.brand : `${o.brand}: ${o.found.join(", ")}`)),
            "hl-leak"))
        : el("p", {}, t("check.others.pass"))),
    platformRow(report.platform),
    row("thai_ratio", thaiFailed ? "fail" : "pass", t("check.thai"),
      el("p", {}, t("check.thai.ratio", { ratio: Math.round(report.thai_ratio * 100) }))),
  );
  const reasons = report.reasons.length
    ? el("details", { class: "reasons" }, el("summary", {}, t("verdict.reasons")),
      el("ul", {}, report.reasons.map((r) => el("li", {}, r))))
    : null;
  return [head, list, reasons].filter(Boolean);
}
