// pii-redaction (JavaScript): masks email addresses, phone numbers and
// payment card numbers (Luhn-checked) in every message, with one finding per
// mask. The same scan, step for step, as the Rust and Python versions; all
// three pass ../../cases/pii-redaction.json.

import * as reins from "../../../../sdk/js/reins.js";

const KINDS = ["email", "phone", "card"];

export const normalizer = reins.normalizer((ctx, messages) => {
  const kinds = ctx.setting("kinds", KINDS, "list");
  for (const kind of kinds) {
    if (!KINDS.includes(kind)) throw new reins.Refuse(`config.kinds: unknown kind "${kind}", expected email, phone or card`);
  }
  const severity = ctx.setting("severity", "warning", "string");
  if (!reins.SEVERITIES.includes(severity)) {
    throw new reins.Refuse(`config.severity: unknown severity "${severity}", expected info, warning or error`);
  }
  const findings = [];
  const out = messages.map((m, i) => {
    const found = [];
    let text = m.content;
    if (kinds.includes("email")) text = maskEmails(text, found);
    if (kinds.includes("phone") || kinds.includes("card")) {
      text = maskNumbers(text, kinds.includes("phone"), kinds.includes("card"), found);
    }
    for (const [code, msg] of found) findings.push(reins.violation(severity, `/${i}/content`, code, msg));
    return { role: m.role, content: text };
  });
  return { messages: out, findings };
});

const isAsciiAlnum = (c) => /^[A-Za-z0-9]$/.test(c);
// ASCII letters, digits and ._%+-, and any non-ASCII letter with case.
const isLocal = (c) => isAsciiAlnum(c) || "._%+-".includes(c) || (c > "\x7f" && c.toLowerCase() !== c.toUpperCase());
const isDomain = (c) => isAsciiAlnum(c) || c === "." || c === "-";

function validDomain(d) {
  const last = d.split(".").pop();
  return d.includes(".") && !d.startsWith(".") && !d.startsWith("-") && !d.includes("..") &&
    last.length >= 2 && /^[A-Za-z]+$/.test(last);
}

// local@domain.tld -> [EMAIL]. Works on code points, like the Rust and Python versions.
function maskEmails(text, found) {
  const c = Array.from(text);
  const n = c.length;
  const out = [];
  let prev = 0;
  let i = 0;
  while (i < n) {
    if (c[i] === "@") {
      let l = i;
      while (l > prev && isLocal(c[l - 1])) l--;
      let r = i + 1;
      while (r < n && isDomain(c[r])) r++;
      while (r > i + 1 && (c[r - 1] === "." || c[r - 1] === "-")) r--;
      if (l < i && validDomain(c.slice(i + 1, r).join(""))) {
        out.push(...c.slice(prev, l), "[EMAIL]");
        found.push(["pii-email", "masked an email address"]);
        prev = i = r;
        continue;
      }
    }
    i++;
  }
  out.push(...c.slice(prev));
  return out.join("");
}

const isDigit = (c) => c >= "0" && c <= "9" && c.length === 1;
const isSep = (c) => " -.()".includes(c);
// Characters that glue a digit run to a preceding word (ORD-123, v1.2).
const isWord = (c) => isAsciiAlnum(c) || "_-/.".includes(c);

function luhn(digits) {
  let total = 0;
  digits.slice().reverse().forEach((d, k) => {
    if (k % 2 === 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    total += d;
  });
  return total % 10 === 0;
}

// Luhn-valid 13-19 digit runs -> [CARD ending NNNN]; 10-12 digits, or 8-15
// after a +, -> [PHONE]; anything else (dates, amounts, ids) stays.
function maskNumbers(text, phone, card, found) {
  const c = Array.from(text);
  const n = c.length;
  const out = [];
  let prev = 0;
  let i = 0;
  while (i < n) {
    const ch = c[i];
    const opener = (ch === "+" || ch === "(") && i + 1 < n && isDigit(c[i + 1]);
    if (!(isDigit(ch) || opener) || (i > 0 && isWord(c[i - 1]))) {
      i++;
      continue;
    }
    const digits = isDigit(ch) ? [Number(ch)] : [];
    let cardSeps = true;
    let end = isDigit(ch) ? i + 1 : i;
    let j = i + 1;
    for (;;) {
      if (j < n && isDigit(c[j])) {
        digits.push(Number(c[j]));
        j++;
        end = j;
      } else if (j < n && isSep(c[j])) {
        let k = j;
        while (k < n && isSep(c[k]) && k - j < 2) k++;
        if (k < n && isDigit(c[k])) {
          cardSeps = cardSeps && c.slice(j, k).every((s) => s === " " || s === "-");
          j = k;
        } else break;
      } else break;
    }
    const d = digits.length;
    const glued = end < n && (isAsciiAlnum(c[end]) || c[end] === "_");
    let mask = null;
    if (glued) {
      // part of a word: leave it
    } else if (card && !opener && d >= 13 && d <= 19 && cardSeps && luhn(digits)) {
      const last4 = digits.slice(-4).join("");
      found.push(["pii-card", `masked a card number ending ${last4}`]);
      mask = `[CARD ending ${last4}]`;
    } else if (phone && ((ch === "+" && d >= 8 && d <= 15) || (d >= 10 && d <= 12))) {
      found.push(["pii-phone", "masked a phone number"]);
      mask = "[PHONE]";
    }
    if (mask !== null) {
      out.push(...c.slice(prev, i), mask);
      prev = end;
    }
    i = Math.max(end, i + 1);
  }
  out.push(...c.slice(prev));
  return out.join("");
}
