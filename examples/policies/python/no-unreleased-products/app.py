"""no-unreleased-products (Python): no string anywhere in the answer may name
a product from config.products (whole words, ASCII case-insensitive). With
config.replacement the names are replaced instead: the validator returns the
fixed document and info notes.

Passes the same case file as the Rust and JavaScript versions
(../../cases/no-unreleased-products.json).
"""

import json

import reins_sdk as reins

_ASCII_LOWER = {ord(c): ord(c) + 32 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def settings(config):
    """The set-up: the config checked once (by `init` at load, else by the
    first call with this config)."""
    if "products" not in config:
        raise reins.Refuse("config.products: missing (required)")
    ctx = reins.Context(config=config)
    products = ctx.setting("products", [], list)
    if not all(isinstance(p, str) for p in products):
        raise reins.Refuse("config.products: expected a list of strings")
    return products, ctx.setting("replacement", None, str)


SETUP = reins.Setup(settings)
Init = reins.init(SETUP)  # the optional `init` export (world validator-plugin-init)


def validate(ctx, output):
    products, replacement = SETUP.get(ctx)
    try:
        doc = json.loads(output)
    except ValueError:
        return [reins.error("", "json", "the output is not valid JSON")]
    violations = []
    for path, text in list(reins.strings(doc)):
        fixed = text
        for product in products:
            if not find_words(text, product):
                continue
            if replacement is None:
                violations.append(reins.error(
                    path, "unreleased-product",
                    f'mentions the unreleased product "{product}"; do not name unreleased products'))
            else:
                violations.append(reins.info(
                    path, "redacted", f'replaced the unreleased product "{product}" with "{replacement}"'))
                fixed = replace_words(fixed, product, replacement)
        if fixed != text:
            doc = set_at(doc, reins.split(path), fixed)
    if replacement is not None and violations:
        return reins.Verdict(violations, fixed=doc)
    return violations


def is_ascii_alnum(c):
    return c.isascii() and c.isalnum()


def find_words(text, word):
    """Offsets of word in text as a whole word, ASCII case-insensitive."""
    hay, needle = text.translate(_ASCII_LOWER), word.translate(_ASCII_LOWER)
    hits, w = [], len(needle)
    if w == 0:
        return hits
    k = hay.find(needle)
    while k >= 0:
        before = k == 0 or not is_ascii_alnum(hay[k - 1])
        after = k + w == len(hay) or not is_ascii_alnum(hay[k + w])
        if before and after:
            hits.append(k)
        k = hay.find(needle, k + 1)
    return hits


def replace_words(text, word, new):
    out, last = [], 0
    for k in find_words(text, word):
        if k < last:
            continue
        out += [text[last:k], new]
        last = k + len(word)
    out.append(text[last:])
    return "".join(out)


def set_at(doc, tokens, value):
    if not tokens:
        return value
    key = int(tokens[0]) if isinstance(doc, list) else tokens[0]
    doc[key] = set_at(doc[key], tokens[1:], value)
    return doc


Validator = reins.validator(validate)
