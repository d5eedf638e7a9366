// CSV as RFC 4180 writes it (quoted fields, "" for a quote, CRLF), read and written.

export class CsvError extends Error {}

/** Rows of cells; a BOM (Excel's "CSV UTF-8") is dropped, quoted cells may hold commas and new lines. */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  let started = false; // a quote opens a quoted cell only as its first character
  const end = () => {
    row.push(cell);
    cell = "";
    started = false;
  };
  for (let i = text.startsWith("\ufeff") ? 1 : 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c !== '"') cell += c;
      else if (text[i + 1] === '"') cell += text[++i];
      else quoted = false;
    } else if (c === '"' && !started) {
      quoted = started = true;
    } else if (c === ",") {
      end();
    } else if (c === "\r" || c === "\n") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      end();
      rows.push(row);
      row = [];
    } else {
      cell += c;
      started = true;
    }
  }
  if (quoted) throw new CsvError("unclosed quote");
  if (cell || started || row.length) {
    end();
    rows.push(row);
  }
  return rows;
}

const quote = (value) => {
  const s = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/** The rows as CSV text, CRLF line ends, quoting only where needed (as Python's csv module does). */
export const formatCsv = (rows) => rows.map((row) => row.map(quote).join(",")).join("\r\n") + "\r\n";
