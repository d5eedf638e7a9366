// The page's words in Thai (the default) and English. Elements name their string with
// data-i18n (text), data-i18n-placeholder or data-i18n-aria-label, and data-i18n-vars
// (JSON) for the {name} slots, so a toggle re-translates everything already shown.

const STRINGS = {
  th: {
    "title": "AI Director Studio",
    "key.change": "🔑 API key",
    "key.title": "ใส่ API key",
    "key.why": "เซิร์ฟเวอร์นี้ต้องใช้ API key ก่อนเรียกใช้งาน",
    "key.wrong": "คีย์นี้ใช้ไม่ได้ ลองใส่ใหม่อีกครั้ง",
    "key.label": "API key",
    "key.where": "เก็บไว้ในแท็บนี้เท่านั้น (sessionStorage) และส่งเป็น Bearer token",
    "key.use": "ใช้คีย์นี้",
    "key.cancel": "ยกเลิก",
    "brand.title": "แบรนด์",
    "brand.search": "ค้นหาแบรนด์ (ชื่อไทย อังกฤษ หรือชื่อเรียกอื่น)",
    "brand.placeholder": "เช่น คอฟฟี่แล็บ, GlowLab",
    "brand.count": "มีทั้งหมด {count} แบรนด์",
    "brand.looking": "กำลังค้นหา…",
    "brand.notFound": "ไม่พบแบรนด์ “{query}”",
    "brand.didYouMean": "หมายถึงแบรนด์นี้หรือเปล่า:",
    "brand.pickFirst": "เลือกแบรนด์ทางซ้ายก่อน",
    "brand.match.exact": "ตรงกับชื่อแบรนด์",
    "brand.match.alias": "ตรงกับชื่อเรียก “{matched}”",
    "brand.match.fuzzy": "ใกล้เคียง “{matched}” ({score}%)",
    "profile.tone": "โทน",
    "profile.audience": "กลุ่มเป้าหมาย",
    "profile.hashtags": "แฮชแท็กของแบรนด์",
    "profile.emoji": "อีโมจิประจำแบรนด์",
    "profile.avoid": "คำที่ต้องหลีกเลี่ยง",
    "profile.none": "—",
    "tab.generate": "สร้างคอนเทนต์",
    "tab.check": "ตรวจข้อความ",
    "tab.calendar": "ปฏิทินคอนเทนต์",
    "task.caption": "แคปชัน",
    "task.adapt-voice": "ปรับเป็นเสียงแบรนด์",
    "task.brief": "บรีฟแคมเปญ",
    "gen.task": "ประเภทงาน",
    "field.context": "โอกาส / สิ่งที่จะโพสต์",
    "field.context.hint": "เช่น เปิดตัวเมนูใหม่ Cold Brew ต้อนรับหน้าร้อน",
    "field.message": "ข้อความต้นฉบับ",
    "field.message.hint": "เช่น ลดราคา 20% ทุกรายการ ถึงสิ้นเดือนนี้",
    "field.objectives": "วัตถุประสงค์ (บรรทัดละข้อ)",
    "field.objectives.hint": "เช่น เพิ่มยอดขายช่วงสงกรานต์",
    "field.audience": "กลุ่มเป้าหมาย (ถ้ามี)",
    "field.audience.hint": "เช่น คนทำงานในกรุงเทพฯ",
    "field.tone": "โทนเพิ่มเติม (ถ้ามี)",
    "field.tone.hint": "เช่น สดใส เป็นกันเอง",
    "field.platform": "แพลตฟอร์ม",
    "field.platform.none": "ไม่ระบุ",
    "field.adapter": "สไตล์การเขียน (adapter)",
    "field.adapter.default": "ค่าเริ่มต้น",
    "field.adapter.none": "โมเดลพื้นฐาน (ไม่ใช้ adapter)",
    "field.required": "กรอก “{field}” ก่อน",
    "gen.generate": "✨ สร้าง",
    "gen.regenerate": "↻ สร้างใหม่",
    "gen.compare": "เทียบ",
    "gen.attempts": "จำนวนตัวเลือก",
    "gen.candidates": "ตัวเลือก",
    "gen.copy": "คัดลอก",
    "gen.copied": "คัดลอกแล้ว",
    "gen.writing": "กำลังเขียน…",
    "gen.comparing": "กำลังสร้าง {n} ตัวเลือก…",
    "gen.done": "เสร็จแล้ว · {tokens} โทเคน · seed {seed}",
    "gen.candidate": "ตัวเลือก {n}",
    "gen.chosen": "ที่เลือก",
    "gen.streamEnded": "การเชื่อมต่อจบก่อนได้คำตอบ ลองใหม่อีกครั้ง",
    "verdict.pass": "✓ ตรงแบรนด์",
    "verdict.fail": "✗ ยังไม่ตรงแบรนด์",
    "verdict.score": "ผ่าน {score}% ของการตรวจ",
    "verdict.reasons": "เหตุผลจากระบบ",
    "badge.pass": "ผ่าน",
    "badge.fail": "ไม่ผ่าน",
    "badge.info": "ข้อมูล",
    "check.brand": "กล่าวถึงแบรนด์",
    "check.brand.pass": "มีชื่อแบรนด์หรือชื่อเรียกของแบรนด์",
    "check.brand.fail": "ไม่พบชื่อแบรนด์หรือชื่อเรียกใดๆ ของแบรนด์",
    "check.hashtags": "แฮชแท็ก",
    "check.hashtags.own": "ของแบรนด์:",
    "check.hashtags.new": "ใหม่:",
    "check.hashtags.none": "ไม่มีแฮชแท็ก",
    "check.avoid": "คำที่ต้องหลีกเลี่ยง",
    "check.avoid.pass": "ไม่มีคำต้องห้าม",
    "check.avoid.fail": "พบคำที่ต้องหลีกเลี่ยง (ไฮไลต์สีเหลืองในข้อความ):",
    "check.others": "ชื่อแบรนด์อื่น",
    "check.others.pass": "ไม่มีชื่อแบรนด์อื่นหลุดมา",
    "check.others.fail": "พบชื่อแบรนด์อื่น (ไฮไลต์สีแดงในข้อความ):",
    "check.platform": "ความยาวบน {platform}",
    "check.platform.none": "เลือกแพลตฟอร์มเพื่อตรวจความยาว",
    "check.platform.length": "{length} / {limit} ตัวอักษร",
    "check.platform.tags": "แฮชแท็ก {count} / {limit}",
    "check.platform.tagsFree": "แฮชแท็ก {count}",
    "check.thai": "ภาษาไทย",
    "check.thai.ratio": "ตัวอักษรไทย {ratio}%",
    "check.intro": "วางข้อความใดก็ได้ ระบบจะตรวจตามคู่มือแบรนด์ด้วยเกณฑ์เดียวกับตอนสร้าง",
    "check.text": "ข้อความที่จะตรวจ",
    "check.text.hint": "วางแคปชันหรือโพสต์ที่นี่",
    "check.run": "ตรวจข้อความ",
    "cal.intro": "อัปโหลดปฏิทินคอนเทนต์เป็นไฟล์ CSV (คอลัมน์ date, brand, task, context / message / objectives, platform, tone, audience)",
    "cal.sample": "ดาวน์โหลดไฟล์ตัวอย่าง",
    "cal.choose": "📄 เลือกไฟล์ CSV",
    "cal.run": "✨ สร้างทั้งหมด",
    "cal.download": "⬇ ดาวน์โหลด CSV",
    "cal.ready": "{name}: {count} แถว พร้อมสร้าง",
    "cal.progress": "{done} / {total} แถว",
    "cal.finished": "เสร็จแล้ว {ok} แถว, ไม่สำเร็จ {failed} แถว",
    "cal.col.row": "แถว",
    "cal.col.date": "วันที่",
    "cal.col.brand": "แบรนด์",
    "cal.col.task": "งาน",
    "cal.col.input": "โจทย์",
    "cal.col.text": "ผลลัพธ์",
    "cal.col.checks": "ผลตรวจ",
    "cal.err.empty": "ไฟล์ไม่มีแถวข้อมูลใต้หัวตาราง",
    "cal.err.columns": "ไม่พบคอลัมน์ {missing} (หัวตารางต้องมี brand, task และ context / message / objectives)",
    "cal.err.task": "แถว {row}: งาน “{task}” ต้องเป็น caption, adapt-voice หรือ brief",
    "cal.err.brand": "แถว {row}: ช่องแบรนด์ว่าง",
    "cal.err.input": "แถว {row}: งาน {task} ต้องมีช่อง {field}",
    "cal.err.platform": "แถว {row}: แพลตฟอร์ม “{platform}” ต้องเป็น {platforms}",
    "cal.err.quote": "ไฟล์ CSV มีเครื่องหมายคำพูด (\") ที่ไม่ได้ปิด",
    "cal.err.utf8": "ไฟล์ไม่ได้เข้ารหัสเป็น UTF-8 ให้บันทึกใหม่เป็น “CSV UTF-8”",
  },
  en: {
    "title": "AI Director Studio",
    "key.change": "🔑 API key",
    "key.title": "Enter the API key",
    "key.why": "This server needs an API key.",
    "key.wrong": "That key was refused; try again.",
    "key.label": "API key",
    "key.where": "Kept in this tab only (sessionStorage) and sent as a Bearer token.",
    "key.use": "Use this key",
    "key.cancel": "Cancel",
    "brand.title": "Brand",
    "brand.search": "Search a brand (Thai or Latin name, or alias)",
    "brand.placeholder": "e.g. คอฟฟี่แล็บ, GlowLab",
    "brand.count": "{count} brands",
    "brand.looking": "Looking…",
    "brand.notFound": "No brand matches “{query}”",
    "brand.didYouMean": "Did you mean:",
    "brand.pickFirst": "Pick a brand on the left first.",
    "brand.match.exact": "Matched the brand name",
    "brand.match.alias": "Matched the alias “{matched}”",
    "brand.match.fuzzy": "Close to “{matched}” ({score}%)",
    "profile.tone": "Tone",
    "profile.audience": "Audience",
    "profile.hashtags": "Brand hashtags",
    "profile.emoji": "Signature emoji",
    "profile.avoid": "Words to avoid",
    "profile.none": "—",
    "tab.generate": "Generate",
    "tab.check": "Check my copy",
    "tab.calendar": "Content calendar",
    "task.caption": "Caption",
    "task.adapt-voice": "Brand voice",
    "task.brief": "Campaign brief",
    "gen.task": "Task",
    "field.context": "Occasion",
    "field.context.hint": "e.g. launch of the new Cold Brew for summer",
    "field.message": "Message to rewrite",
    "field.message.hint": "e.g. 20% off everything until the end of the month",
    "field.objectives": "Objectives (one per line)",
    "field.objectives.hint": "e.g. more sales during Songkran",
    "field.audience": "Audience (optional)",
    "field.audience.hint": "e.g. office workers in Bangkok",
    "field.tone": "Extra tone (optional)",
    "field.tone.hint": "e.g. bright, friendly",
    "field.platform": "Platform",
    "field.platform.none": "Any",
    "field.adapter": "Writing style (adapter)",
    "field.adapter.default": "Default",
    "field.adapter.none": "Base model (no adapter)",
    "field.required": "Fill in “{field}” first.",
    "gen.generate": "✨ Generate",
    "gen.regenerate": "↻ Regenerate",
    "gen.compare": "Compare",
    "gen.attempts": "Number of candidates",
    "gen.candidates": "candidates",
    "gen.copy": "Copy",
    "gen.copied": "Copied",
    "gen.writing": "Writing…",
    "gen.comparing": "Writing {n} candidates…",
    "gen.done": "Done · {tokens} tokens · seed {seed}",
    "gen.candidate": "Candidate {n}",
    "gen.chosen": "chosen",
    "gen.streamEnded": "The connection ended before the answer; try again.",
    "verdict.pass": "✓ On brand",
    "verdict.fail": "✗ Not on brand yet",
    "verdict.score": "{score}% of checks passed",
    "verdict.reasons": "Reasons from the service",
    "badge.pass": "pass",
    "badge.fail": "fail",
    "badge.info": "info",
    "check.brand": "Brand mentioned",
    "check.brand.pass": "Names the brand or one of its aliases.",
    "check.brand.fail": "Names neither the brand nor any alias.",
    "check.hashtags": "Hashtags",
    "check.hashtags.own": "brand's:",
    "check.hashtags.new": "new:",
    "check.hashtags.none": "No hashtags.",
    "check.avoid": "Words to avoid",
    "check.avoid.pass": "None used.",
    "check.avoid.fail": "Used (highlighted yellow in the text):",
    "check.others": "Other brands",
    "check.others.pass": "No other brand named.",
    "check.others.fail": "Named (highlighted red in the text):",
    "check.platform": "Length on {platform}",
    "check.platform.none": "Pick a platform to check the length.",
    "check.platform.length": "{length} / {limit} characters",
    "check.platform.tags": "{count} / {limit} hashtags",
    "check.platform.tagsFree": "{count} hashtags",
    "check.thai": "Thai",
    "check.thai.ratio": "{ratio}% Thai letters",
    "check.intro": "Paste any copy and get the same verdict the generated copy gets: the brand guide as a linter.",
    "check.text": "Copy to check",
    "check.text.hint": "Paste a caption or a post here",
    "check.run": "Check",
    "cal.intro": "Upload a content calendar as CSV (columns date, brand, task, context / message / objectives, platform, tone, audience).",
    "cal.sample": "Download a sample",
    "cal.choose": "📄 Choose a CSV file",
    "cal.run": "✨ Generate all",
    "cal.download": "⬇ Download CSV",
    "cal.ready": "{name}: {count} rows ready",
    "cal.progress": "{done} / {total} rows",
    "cal.finished": "Done: {ok} rows written, {failed} failed",
    "cal.col.row": "Row",
    "cal.col.date": "Date",
    "cal.col.brand": "Brand",
    "cal.col.task": "Task",
    "cal.col.input": "Brief",
    "cal.col.text": "Copy",
    "cal.col.checks": "Checks",
    "cal.err.empty": "The file has no rows below its header.",
    "cal.err.columns": "No {missing} column (the header names brand, task and context / message / objectives).",
    "cal.err.task": "Row {row}: task “{task}” is not caption, adapt-voice or brief.",
    "cal.err.brand": "Row {row}: the brand is empty.",
    "cal.err.input": "Row {row}: a {task} needs its {field}.",
    "cal.err.platform": "Row {row}: platform “{platform}” is not one of {platforms}.",
    "cal.err.quote": "The CSV has a quote (\") that is never closed.",
    "cal.err.utf8": "The file is not UTF-8; save it as “CSV UTF-8”.",
  },
};

const STORED = "ai-director-studio-lang";
const listeners = [];
let lang = stored() === "en" ? "en" : "th";

function stored() {
  try {
    return localStorage.getItem(STORED);
  } catch {
    return null; // storage blocked (private mode): Thai, not a broken page
  }
}

export const currentLang = () => lang;

export function t(key, vars = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** Show a translated string in `node`, re-translated on every toggle. */
export function say(node, key, vars) {
  node.dataset.i18n = key;
  if (vars) node.dataset.i18nVars = JSON.stringify(vars);
  else delete node.dataset.i18nVars;
  node.textContent = t(key, vars);
}

/** Show text from the server (an error message) as it is. */
export function sayRaw(node, text) {
  delete node.dataset.i18n;
  delete node.dataset.i18nVars;
  node.textContent = text;
}

export function onLang(fn) {
  listeners.push(fn);
}

export function apply(root = document) {
  document.documentElement.lang = lang;
  document.title = t("title");
  for (const node of root.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n, node.dataset.i18nVars ? JSON.parse(node.dataset.i18nVars) : {});
  }
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of root.querySelectorAll("[data-i18n-aria-label]")) node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  for (const button of document.querySelectorAll("[data-lang]")) button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
}

export function setLang(next) {
  lang = next === "en" ? "en" : "th";
  try {
    localStorage.setItem(STORED, lang);
  } catch {
    // not remembered, but still switched
  }
  apply();
  for (const fn of listeners) fn();
}
