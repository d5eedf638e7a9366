// Building the page from data without innerHTML: every string goes in as a text node, so
// copy from the model or a user can never become markup.

/** el("p", {class: "muted"}, "text", child, ...): attributes, then children (strings or nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** The clipboard, also on plain http:// hosts, where navigator.clipboard does not exist. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      // denied: fall through to the old way
    }
  }
  const area = el("textarea", { readonly: true, class: "offscreen" }, text);
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

let toastTimer;
export function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 2000);
}

/** Show an error's message in `node` (role=alert), or hide it with null. */
export function showError(node, error) {
  node.hidden = !error;
  node.textContent = error ? error.message : "";
}
