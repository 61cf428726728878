//! Personal data detectors: e-mail addresses, phone numbers, payment card
//! numbers (Luhn-valid) and IBANs (ISO 13616 mod-97-valid).
//!
//! Hand-written scanners over bytes, linear in the text. Numbers are the
//! hard part: a phone number, a card number, a date, an amount, an IP
//! address and an order id are all digits and separators, so each detector
//! says what it will *not* take:
//!
//! - a **card** is 13–19 digits, unformatted or in groups of 3–6 digits
//!   separated by one space or one dash (the same one throughout), starting
//!   with 2–6 (the issuers of payment cards) and passing the Luhn check; a
//!   16-digit number that fails Luhn is not a card (and, being too long for
//!   a phone number, is nothing);
//! - a **phone number** is `+` and 8–15 digits (E.164) with spaces, dashes,
//!   dots or parentheses between groups, or a national number of 10–12
//!   digits in at least two groups (`(415) 555-2671`, `020 7946 0958`,
//!   `06 12 34 56 78`); never a date (`2024-01-15 10`), an IPv4 address, a
//!   number grouped in thousands (`1 234 567 890`), an amount after a
//!   currency sign, or digits glued to letters (`ORD-415-555-2671`);
//! - an **IBAN** is a known country code, two check digits and the
//!   country's BBAN length (spaces allowed between groups of four), valid
//!   under mod 97;
//! - an **e-mail address** is `local@domain.tld` in ASCII.

use crate::{Match, resolve_overlaps};

/// The kinds of personal data [`find_pii`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
}

impl PiiKind {
    pub const ALL: [PiiKind; 4] = [PiiKind::Email, PiiKind::Phone, PiiKind::Card, PiiKind::Iban];

    /// The kind's name: `email`, `phone`, `card`, `iban` (also [`Match::kind`]).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Iban => "iban",
        }
    }

    pub fn parse(name: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// How the kind reads in a message: `an e-mail address`.
    pub fn describe(self) -> &'static str {
        match self {
            PiiKind::Email => "an e-mail address",
            PiiKind::Phone => "a phone number",
            PiiKind::Card => "a payment card number",
            PiiKind::Iban => "an IBAN",
        }
    }
}

/// Every match of the given kinds in `text`, in text order, without
/// overlaps (an e-mail address wins over an IBAN, an IBAN over a card, a
/// card over a phone number).
pub fn find_pii(text: &str, kinds: &[PiiKind]) -> Vec<Match> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    if kinds.contains(&PiiKind::Email) {
        emails(bytes, &mut found);
    }
    if kinds.contains(&PiiKind::Iban) {
        ibans(bytes, &mut found);
    }
    if kinds.contains(&PiiKind::Card) {
        cards(bytes, &mut found);
    }
    if kinds.contains(&PiiKind::Phone) {
        phones(text, &mut found);
    }
    resolve_overlaps(found)
}

// ---------------------------------------------------------------------------
// E-mail

fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

fn emails(bytes: &[u8], out: &mut Vec<Match>) {
    for at in memchr_all(bytes, b'@') {
        let mut start = at;
        while start > 0 && local_char(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        if start == at {
            continue;
        }
        let mut end = at + 1;
        while end < bytes.len() && domain_char(bytes[end]) {
            end += 1;
        }
        // A sentence's full stop (or a dangling dash) is not the domain's.
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if valid_domain(&bytes[at + 1..end]) {
            out.push(Match {
                kind: "email",
                start,
                end,
            });
        }
    }
}

fn memchr_all(bytes: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(move |&(_, &b)| b == needle)
        .map(|(i, _)| i)
}

fn valid_domain(domain: &[u8]) -> bool {
    let labels: Vec<&[u8]> = domain.split(|&b| b == b'.').collect();
    let Some(tld) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.len() <= 63 && l[0] != b'-' && l[l.len() - 1] != b'-')
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
}

// ---------------------------------------------------------------------------
// Numbers: shared boundaries

/// Whether a number may start at `i`: not glued to a word (`ORD-4155`,
/// `x4111`), not after `+` (a phone's country code), not the continuation
/// of a number (`1.4111`, `3/4111`).
fn number_start(bytes: &[u8], i: usize) -> bool {
    let Some(&p) = i.checked_sub(1).and_then(|j| bytes.get(j)) else {
        return true;
    };
    if p.is_ascii_alphanumeric() || p == b'_' || p == b'+' {
        return false;
    }
    let glued = matches!(p, b'-' | b'.' | b',' | b'/' | b'_' | b':')
        && i >= 2
        && bytes[i - 2].is_ascii_alphanumeric();
    !glued
}

/// Whether a number may end at `end`: not followed by a letter or digit,
/// nor by `.5`, `,5`, `/5`, `-5`.
fn number_end(bytes: &[u8], end: usize) -> bool {
    let Some(&n) = bytes.get(end) else {
        return true;
    };
    if n.is_ascii_alphanumeric() || n == b'_' {
        return false;
    }
    let continued = matches!(n, b'.' | b',' | b'/' | b'-' | b':')
        && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
    !continued
}

fn digits_at(bytes: &[u8], i: usize) -> usize {
    bytes[i.min(bytes.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

// ---------------------------------------------------------------------------
// Cards

/// The Luhn check over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn cards(bytes: &[u8], out: &mut Vec<Match>) {
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || !number_start(bytes, i) {
            i += 1;
            continue;
        }
        // Digit groups joined by a single space or dash.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut seps: Vec<u8> = Vec::new();
        let mut j = i;
        loop {
            let n = digits_at(bytes, j);
            groups.push((j, j + n));
            j += n;
            match bytes.get(j) {
                Some(&s @ (b' ' | b'-')) if bytes.get(j + 1).is_some_and(u8::is_ascii_digit) => {
                    seps.push(s);
                    j += 1;
                }
                _ => break,
            }
        }
        let run_end = j;
        if number_end(bytes, run_end) {
            card_windows(bytes, &groups, &seps, out);
        }
        i = run_end.max(i + 1);
    }
}

/// The longest Luhn-valid card in each stretch of `groups`, left to right.
fn card_windows(bytes: &[u8], groups: &[(usize, usize)], seps: &[u8], out: &mut Vec<Match>) {
    let mut a = 0;
    while a < groups.len() {
        let mut found = None;
        for b in (a..groups.len().min(a + 19)).rev() {
            let window = &groups[a..=b];
            let count: usize = window.iter().map(|(s, e)| e - s).sum();
            if !(13..=19).contains(&count) {
                continue;
            }
            if b > a {
                let same_sep = seps[a..b].iter().all(|&s| s == seps[a]);
                let shaped = window.iter().all(|(s, e)| (3..=6).contains(&(e - s)));
                if !same_sep || !shaped {
                    continue;
                }
            }
            let digits: Vec<u8> = window
                .iter()
                .flat_map(|&(s, e)| bytes[s..e].iter().copied())
                .collect();
            if matches!(digits[0], b'2'..=b'6') && luhn(&digits) {
                found = Some(b);
                break;
            }
        }
        match found {
            Some(b) => {
                out.push(Match {
                    kind: "card",
                    start: groups[a].0,
                    end: groups[b].1,
                });
                a = b + 1;
            }
            None => a += 1,
        }
    }
}

/// Where a card number may be starting at the very end of `text` (perhaps
/// followed by one space or dash): trailing digit groups, joined as in a
/// card by one space or one dash (the same throughout), that more groups
/// could complete into a card number — at least 4 digits so far, groups of
/// 3–6 digits, the first starting with 2–6, at most 16 digits (room for one
/// more group), not glued to a word. Returns the earliest such group's
/// byte offset, or `None`.
///
/// For checkers of streamed text, which see an answer in pieces split at
/// whitespace: a piece that ends so must be held back until the next one
/// shows whether a card number follows (`4111 1111` | `1111 1111`). A
/// single unformatted number is never split (it has no whitespace), so it
/// is a card or not already.
pub fn partial_card_at_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    let trailing_sep = match bytes.last() {
        Some(&s @ (b' ' | b'-')) => {
            end -= 1;
            Some(s)
        }
        _ => None,
    };
    if end == 0 || !bytes[end - 1].is_ascii_digit() {
        return None;
    }
    // Walk the groups back from the end: the window from each group to the
    // last is a candidate while its groups are card-shaped and joined by
    // one separator.
    let mut sep = trailing_sep;
    let mut shaped = true;
    let mut digits = 0;
    let mut best = None;
    let mut i = end;
    loop {
        let group_end = i;
        while i > 0 && bytes[i - 1].is_ascii_digit() {
            i -= 1;
        }
        let len = group_end - i;
        digits += len;
        shaped &= (3..=6).contains(&len);
        if shaped && (4..=16).contains(&digits) && matches!(bytes[i], b'2'..=b'6') {
            best = Some(i);
        }
        if i >= 2 && matches!(bytes[i - 1], b' ' | b'-') && bytes[i - 2].is_ascii_digit() {
            let s = bytes[i - 1];
            shaped &= sep.is_none_or(|t| t == s);
            sep = Some(s);
            i -= 1;
            continue;
        }
        // The run's first group: a card needs the run to start a number.
        return if number_start(bytes, i) { best } else { None };
    }
}

// ---------------------------------------------------------------------------
// Phones

fn phones(text: &str, out: &mut Vec<Match>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        let free = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let intl = b == b'+' && next_digit && free;
        let start = intl
            || (b == b'(' && next_digit && free)
            || (b.is_ascii_digit() && number_start(bytes, i));
        if !start {
            i += 1;
            continue;
        }
        let run = phone_run(bytes, i, intl);
        let after_currency = text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| matches!(c, '$' | '€' | '£' | '¥'));
        if let Some(end) = run.accepted
            && !after_currency
        {
            out.push(Match {
                kind: "phone",
                start: i,
                end,
            });
        }
        i = run.end.max(i + 1);
    }
}

struct PhoneRun {
    /// Where the digits and separators stop.
    end: usize,
    /// `Some(end)` when the run is a phone number.
    accepted: Option<usize>,
}

fn phone_run(bytes: &[u8], start: usize, intl: bool) -> PhoneRun {
    let mut j = start + usize::from(intl);
    let mut open = false;
    if bytes.get(j) == Some(&b'(') {
        open = true;
        j += 1;
    }
    let mut groups: Vec<(usize, usize)> = Vec::new();
    // The separator after each group but the last: its non-paren character,
    // or b'(' for parentheses alone.
    let mut seps: Vec<u8> = Vec::new();
    let mut parens = open;
    let mut end = j;
    loop {
        let n = digits_at(bytes, j);
        if n == 0 {
            break;
        }
        groups.push((j, j + n));
        j += n;
        end = j;
        let mut k = j;
        let (mut spaces, mut dashes, mut dots) = (0, 0, 0);
        let mut open_here = open;
        let mut valid = true;
        while k < bytes.len() && k - j < 3 {
            match bytes[k] {
                b' ' => spaces += 1,
                b'-' => dashes += 1,
                b'.' => dots += 1,
                b'(' if !open_here => open_here = true,
                b')' if open_here => open_here = false,
                b'(' | b')' => valid = false,
                _ => break,
            }
            k += 1;
        }
        if k == j
            || !valid
            || spaces > 2
            || dashes > 1
            || dots > 1
            || !bytes.get(k).is_some_and(u8::is_ascii_digit)
        {
            // "(415)" at the very end: take the closing parenthesis.
            if open && bytes.get(j) == Some(&b')') {
                open = false;
                end = j + 1;
            }
            break;
        }
        if open_here != open {
            parens = true;
        }
        open = open_here;
        seps.push(if dashes > 0 {
            b'-'
        } else if dots > 0 {
            b'.'
        } else if spaces > 0 {
            b' '
        } else {
            b'('
        });
        j = k;
    }
    let run_end = end.max(start + 1);
    let accepted =
        (!open && is_phone(bytes, &groups, &seps, intl, parens) && number_end(bytes, end))
            .then_some(end);
    PhoneRun {
        end: run_end,
        accepted,
    }
}

fn is_phone(
    bytes: &[u8],
    groups: &[(usize, usize)],
    seps: &[u8],
    intl: bool,
    parens: bool,
) -> bool {
    let digits: usize = groups.iter().map(|(s, e)| e - s).sum();
    let len = |g: &(usize, usize)| g.1 - g.0;
    let value = |g: &(usize, usize)| -> u32 {
        bytes[g.0..g.1]
            .iter()
            .take(6)
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'))
    };
    let ok = if intl {
        (8..=15).contains(&digits)
    } else {
        let thousands = !parens
            && groups.len() >= 2
            && (1..=3).contains(&len(&groups[0]))
            && bytes[groups[0].0] != b'0'
            && groups[1..].iter().all(|g| len(g) == 3)
            && seps.iter().all(|&s| s == b' ' || s == b'.');
        (10..=12).contains(&digits) && groups.len() >= 2 && !thousands
    };
    if !ok {
        return false;
    }
    // An IPv4 address.
    if groups.len() == 4 && seps.iter().all(|&s| s == b'.') && groups.iter().all(|g| len(g) <= 3) {
        return false;
    }
    // A date (YYYY-MM-DD, DD.MM.YYYY, MM-DD-YYYY) anywhere in the run.
    for w in 0..groups.len().saturating_sub(2) {
        let (a, b, c) = (&groups[w], &groups[w + 1], &groups[w + 2]);
        if seps[w] != seps[w + 1] || !matches!(seps[w], b'-' | b'.' | b'/') {
            continue;
        }
        let year = |g: &(usize, usize)| len(g) == 4 && (1900..=2099).contains(&value(g));
        let small = |g: &(usize, usize), max: u32| len(g) <= 2 && (1..=max).contains(&value(g));
        let ymd = year(a) && small(b, 12) && small(c, 31);
        let dmy = small(a, 31) && small(b, 31) && year(c);
        if ymd || dmy {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------
// IBAN

/// Country code → IBAN length (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_bytes() == country)
        .map(|&(_, n)| n)
}

/// ISO 13616: the IBAN with its first four characters moved to the end,
/// letters as 10..35, is 1 mod 97.
pub fn iban_valid(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

fn ibans(bytes: &[u8], out: &mut Vec<Match>) {
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let head = bytes[i].is_ascii_uppercase()
            && bytes[i + 1].is_ascii_uppercase()
            && bytes[i + 2].is_ascii_digit()
            && bytes[i + 3].is_ascii_digit()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        let Some(len) = head.then(|| iban_length(&bytes[i..i + 2])).flatten() else {
            i += 1;
            continue;
        };
        let mut chars = Vec::with_capacity(len);
        let mut j = i;
        let alnum = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
        while chars.len() < len && j < bytes.len() {
            let b = bytes[j];
            if alnum(b) {
                chars.push(b);
                j += 1;
            } else if b == b' '
                && chars.len().is_multiple_of(4)
                && bytes.get(j + 1).is_some_and(|&n| alnum(n))
            {
                j += 1;
            } else {
                break;
            }
        }
        if chars.len() == len
            && !bytes.get(j).is_some_and(u8::is_ascii_alphanumeric)
            && iban_valid(&chars)
        {
            out.push(Match {
                kind: "iban",
                start: i,
                end: j,
            });
            i = j;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(&'static str, &str)> {
        find_pii(text, &PiiKind::ALL)
            .into_iter()
            .map(|m| (m.kind, &text[m.start..m.end]))
            .collect()
    }

    #[test]
    fn emails() {
        assert_eq!(
            found("Mail me at jane.doe+x@mail.example.co.uk."),
            [("email", "jane.doe+x@mail.example.co.uk")]
        );
        assert_eq!(
            found("<a@b.io>, b_c@d-e.org"),
            [("email", "a@b.io"), ("email", "b_c@d-e.org")]
        );
        assert!(found("@handle, user@localhost, x@y.c0m, a@.com").is_empty());
    }

    #[test]
    fn cards_pass_luhn() {
        assert_eq!(
            found("card 4111 1111 1111 1111 ok"),
            [("card", "4111 1111 1111 1111")]
        );
        assert_eq!(
            found("card 4111-1111-1111-1111"),
            [("card", "4111-1111-1111-1111")]
        );
        assert_eq!(
            found("card 5555555555554444."),
            [("card", "5555555555554444")]
        );
        assert_eq!(
            found("amex 3782 822463 10005"),
            [("card", "3782 822463 10005")]
        );
        // Luhn fails: nothing at all (too long for a phone number).
        assert!(found("ref 4111 1111 1111 1112").is_empty());
        assert!(found("ref 4111111111111112").is_empty());
        // Valid Luhn but not a card issuer; glued to letters; mixed separators.
        assert!(found("id 0000000000000000").is_empty());
        assert!(found("ORD4111111111111111").is_empty());
        assert!(found("4111 1111-1111 1111").is_empty());
        // A card followed by a year.
        assert_eq!(
            found("4111 1111 1111 1111 2024"),
            [("card", "4111 1111 1111 1111")]
        );
    }

    #[test]
    fn phones() {
        assert_eq!(
            found("call +1 (415) 555-2671 now"),
            [("phone", "+1 (415) 555-2671")]
        );
        assert_eq!(
            found("call +44 20 7946 0958."),
            [("phone", "+44 20 7946 0958")]
        );
        assert_eq!(
            found("+44 (0)20 7946 0958"),
            [("phone", "+44 (0)20 7946 0958")]
        );
        assert_eq!(found("ring +33612345678"), [("phone", "+33612345678")]);
        assert_eq!(found("(415) 555-2671"), [("phone", "(415) 555-2671")]);
        assert_eq!(found("tel: 415.555.2671"), [("phone", "415.555.2671")]);
        assert_eq!(found("tel 020 7946 0958"), [("phone", "020 7946 0958")]);
        assert_eq!(
            found("portable 06 12 34 56 78"),
            [("phone", "06 12 34 56 78")]
        );
    }

    #[test]
    fn numbers_that_are_not_phones() {
        for text in [
            "on 2024-01-15 10:30",
            "on 15.01.2024 at noon",
            "version 1.2.3",
            "host 192.168.100.200",
            "population 1 234 567 890",
            "total $1 234 567 890",
            "order ORD-415-555-2671",
            "12345",
            "in 2019 and 2020",
            "isbn 978-3-16-148410-0",
            "+12345",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }

    #[test]
    fn ibans() {
        assert_eq!(
            found("IBAN DE89 3704 0044 0532 0130 00, thanks"),
            [("iban", "DE89 3704 0044 0532 0130 00")]
        );
        assert_eq!(
            found("GB82WEST12345698765432"),
            [("iban", "GB82WEST12345698765432")]
        );
        // One digit changed: the checksum fails.
        assert!(found("DE89 3704 0044 0532 0130 01").is_empty());
        // Unknown country; wrong length.
        assert!(found("ZZ89 3704 0044 0532 0130 00").is_empty());
        assert!(found("DE89 3704 0044 0532 0130").is_empty());
    }

    #[test]
    fn partial_cards_at_the_end() {
        fn at(t: &str) -> Option<&str> {
            partial_card_at_end(t).map(|i| &t[i..])
        }
        assert_eq!(at("card 4111 1111 "), Some("4111 1111 "));
        assert_eq!(at("card 4111-1111"), Some("4111-1111"));
        assert_eq!(at("card 4111"), Some("4111"));
        assert_eq!(at("amex 3782 822463"), Some("3782 822463"));
        // A whole formatted card may still grow (19 digits at most).
        assert_eq!(at("4111 1111 1111 1111"), Some("4111 1111 1111 1111"));
        // Too short, wrong first digit, glued to a word, mixed separators,
        // not the end of the text, an unformatted number (never split).
        assert_eq!(at("in 199"), None);
        assert_eq!(at("in 1999 "), None);
        assert_eq!(at("ORD4111 1111"), None);
        assert_eq!(at("4111 1111-1111"), None);
        assert_eq!(at("4111 1111."), None);
        assert_eq!(at("4111 1111\n"), None);
        assert_eq!(at("4111111111111111"), None);
        assert_eq!(at("4111 1111 1111 1111 1111"), None);
        assert_eq!(
            at("call 2024 5678 1111 1111 1111"),
            Some("5678 1111 1111 1111")
        );
        assert_eq!(at(""), None);
    }

    #[test]
    fn kinds_and_priorities() {
        let text = "a@b.io 4111111111111111 +1 415 555 2671";
        let only_cards: Vec<_> = find_pii(text, &[PiiKind::Card])
            .into_iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(only_cards, ["card"]);
        assert_eq!(found(text).len(), 3);
        assert_eq!(PiiKind::parse("iban"), Some(PiiKind::Iban));
        assert_eq!(PiiKind::parse("ssn"), None);
        assert!(luhn(b"79927398713") && !luhn(b"79927398710") && !luhn(b""));
    }
}
