"""pii-redaction (Python): masks email addresses, phone numbers and payment
card numbers (Luhn-checked) in every message, with one finding per mask.

The same scan, step for step, as the Rust (../../rust/pii-redaction) and
JavaScript (../../js/pii-redaction) versions; all three pass
../../cases/pii-redaction.json.
"""

import reins_sdk as reins

KINDS = ("email", "phone", "card")


def normalize(ctx, messages):
    kinds = ctx.setting("kinds", list(KINDS), list)
    for kind in kinds:
        if kind not in KINDS:
            raise reins.Refuse(f'config.kinds: unknown kind "{kind}", expected email, phone or card')
    severity = ctx.setting("severity", "warning", str)
    if severity not in reins.SEVERITIES:
        raise reins.Refuse(f'config.severity: unknown severity "{severity}", expected info, warning or error')
    findings, out = [], []
    for i, m in enumerate(messages):
        found = []
        text = m.content
        if "email" in kinds:
            text = mask_emails(text, found)
        if "phone" in kinds or "card" in kinds:
            text = mask_numbers(text, "phone" in kinds, "card" in kinds, found)
        findings += [reins.violation(severity, f"/{i}/content", code, msg) for code, msg in found]
        out.append(reins.message(m.role, text))
    return out, findings


def is_ascii_alnum(c):
    return c.isascii() and c.isalnum()


def is_local(c):
    # ASCII letters, digits and ._%+-, and any non-ASCII letter with case.
    return is_ascii_alnum(c) or c in "._%+-" or (not c.isascii() and c.lower() != c.upper())


def is_domain(c):
    return is_ascii_alnum(c) or c in ".-"


def valid_domain(d):
    last = d.rsplit(".", 1)[-1]
    return ("." in d and not d.startswith(".") and not d.startswith("-") and ".." not in d
            and len(last) >= 2 and all(c.isascii() and c.isalpha() for c in last))


def mask_emails(c, found):
    """local@domain.tld -> [EMAIL]."""
    n, out, prev, i = len(c), [], 0, 0
    while i < n:
        if c[i] == "@":
            l = i
            while l > prev and is_local(c[l - 1]):
                l -= 1
            r = i + 1
            while r < n and is_domain(c[r]):
                r += 1
            while r > i + 1 and c[r - 1] in ".-":
                r -= 1
            if l < i and valid_domain(c[i + 1:r]):
                out += [c[prev:l], "[EMAIL]"]
                found.append(("pii-email", "masked an email address"))
                prev = i = r
                continue
        i += 1
    out.append(c[prev:])
    return "".join(out)


def is_digit(c):
    return "0" <= c <= "9"


def is_sep(c):
    return c in " -.()"


def is_word(c):
    """Characters that glue a digit run to a preceding word (ORD-123, v1.2)."""
    return is_ascii_alnum(c) or c in "_-/."


def luhn(digits):
    total = 0
    for k, d in enumerate(reversed(digits)):
        if k % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def mask_numbers(c, phone, card, found):
    """Luhn-valid 13-19 digit runs -> [CARD ending NNNN]; 10-12 digits, or
    8-15 after a +, -> [PHONE]; anything else (dates, amounts, ids) stays."""
    n, out, prev, i = len(c), [], 0, 0
    while i < n:
        ch = c[i]
        opener = ch in "+(" and i + 1 < n and is_digit(c[i + 1])
        if not (is_digit(ch) or opener) or (i > 0 and is_word(c[i - 1])):
            i += 1
            continue
        digits = [int(ch)] if is_digit(ch) else []
        card_seps = True
        end = i + 1 if is_digit(ch) else i
        j = i + 1
        while True:
            if j < n and is_digit(c[j]):
                digits.append(int(c[j]))
                j += 1
                end = j
            elif j < n and is_sep(c[j]):
                k = j
                while k < n and is_sep(c[k]) and k - j < 2:
                    k += 1
                if k < n and is_digit(c[k]):
                    card_seps = card_seps and all(s in " -" for s in c[j:k])
                    j = k
                else:
                    break
            else:
                break
        d = len(digits)
        glued = end < n and (is_ascii_alnum(c[end]) or c[end] == "_")
        mask = None
        if glued:
            pass
        elif card and not opener and 13 <= d <= 19 and card_seps and luhn(digits):
            last4 = "".join(str(x) for x in digits[-4:])
            found.append(("pii-card", f"masked a card number ending {last4}"))
            mask = f"[CARD ending {last4}]"
        elif phone and ((ch == "+" and 8 <= d <= 15) or 10 <= d <= 12):
            found.append(("pii-phone", "masked a phone number"))
            mask = "[PHONE]"
        if mask is not None:
            out += [c[prev:i], mask]
            prev = end
        i = max(end, i + 1)
    out.append(c[prev:])
    return "".join(out)


Normalizer = reins.normalizer(normalize)
