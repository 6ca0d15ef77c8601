//! The detectors: one hand-written scanner per [`Detector`].
//!
//! Each scanner walks the bytes once, stops only at its anchor bytes, and
//! reports `(start, end)` byte spans, left to right and not overlapping each
//! other. All patterns begin and end on ASCII bytes, so spans are on char
//! boundaries. Indexing goes through [`byte`] and [`prev`], which read past
//! either end as `0`, so no input can make a scanner panic.

use crate::model::Detector;

/// Runs one detector over `text`, calling `emit(start, end)` per match.
pub(super) fn scan(detector: Detector, text: &str, emit: &mut impl FnMut(usize, usize)) {
    let b = text.as_bytes();
    match detector {
        Detector::Email => email(b, emit),
        Detector::CreditCard => credit_card(b, emit),
        Detector::Ssn => ssn(b, emit),
        Detector::Iban => iban(b, emit),
        Detector::Phone => phone(b, emit),
        Detector::CloudKey => cloud_key(b, emit),
        Detector::Jwt => jwt(b, emit),
        Detector::PrivateKey => private_key(text, emit),
    }
}

// ---------------------------------------------------------------- helpers

/// The byte at `i`, or 0 past the end.
#[inline]
fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The byte `k` positions before `i`, or 0 before the start.
#[inline]
fn prev(b: &[u8], i: usize, k: usize) -> u8 {
    i.checked_sub(k).map_or(0, |j| byte(b, j))
}

#[inline]
fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

#[inline]
fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

#[inline]
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Length of the run of bytes satisfying `pred` starting at `from`.
#[inline]
fn run(b: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .map_or(0, |rest| rest.iter().take_while(|&&c| pred(c)).count())
}

/// Where the digit run that contains or starts at `i` ends.
#[inline]
fn skip_digits(b: &[u8], i: usize) -> usize {
    i + run(b, i, is_digit)
}

/// The number at `[start, end)` is the fractional or integral part of a
/// decimal (`0.4111...`, `4111....5`), not a standalone number.
fn in_decimal(b: &[u8], start: usize, end: usize) -> bool {
    (prev(b, start, 1) == b'.' && is_digit(prev(b, start, 2)))
        || (byte(b, end) == b'.' && is_digit(byte(b, end + 1)))
}

/// Value of the ASCII digits in `b[from..from + n]` (all digits assumed).
fn number(b: &[u8], from: usize, n: usize) -> u32 {
    (from..from + n).fold(0, |acc, i| {
        acc * 10 + u32::from(byte(b, i).wrapping_sub(b'0'))
    })
}

// ------------------------------------------------------------------ email

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'.'
}

/// `local@domain.tld`: local part `[A-Za-z0-9._%+-]+` not starting or ending
/// with a dot; at least two domain labels `[A-Za-z0-9-]+` not starting or
/// ending with `-`; the last label (TLD) at least 2 ASCII letters.
fn email(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut from = 0;
    let mut floor = 0; // the local part may not reach into the previous match
    while let Some(off) = b
        .get(from..)
        .and_then(|r| r.iter().position(|&c| c == b'@'))
    {
        let at = from + off;
        from = at + 1;
        let mut start = at;
        while start > floor && is_local(prev(b, start, 1)) {
            start -= 1;
        }
        while start < at && byte(b, start) == b'.' {
            start += 1;
        }
        if start == at || prev(b, at, 1) == b'.' {
            continue;
        }
        let domain_end = at + 1 + run(b, at + 1, is_domain);
        if let Some(end) = domain_end_at_tld(b, at + 1, domain_end) {
            emit(start, end);
            from = end;
            floor = end;
        }
    }
}

/// The end of the longest valid `label(.label)+` prefix of `b[from..to]`
/// whose last label is a TLD.
fn domain_end_at_tld(b: &[u8], from: usize, to: usize) -> Option<usize> {
    let mut best = None;
    let mut labels = 0;
    let mut start = from;
    while start < to {
        let len = b
            .get(start..to)
            .map_or(0, |r| r.iter().position(|&c| c == b'.').unwrap_or(r.len()));
        let end = start + len;
        if len == 0 || byte(b, start) == b'-' || prev(b, end, 1) == b'-' {
            break;
        }
        labels += 1;
        if labels >= 2 && len >= 2 && (start..end).all(|i| byte(b, i).is_ascii_alphabetic()) {
            best = Some(end);
        }
        start = end + 1;
    }
    best
}

// ------------------------------------------------------------ credit card

/// 13 to 19 digits, bare or in groups separated by single spaces or single
/// dashes (one kind per number), Luhn-valid, with a known IIN prefix. Never
/// part of a longer digit run; groups are taken whole, so a number may start
/// at any group of a longer separated sequence.
fn credit_card(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < b.len() {
        if !is_digit(byte(b, i)) {
            i += 1;
            continue;
        }
        // `i` starts a digit run (the previous byte is not a digit).
        if let Some(end) = card_at(b, i) {
            emit(i, end);
            i = end;
        } else {
            i = skip_digits(b, i);
        }
    }
}

fn card_at(b: &[u8], start: usize) -> Option<usize> {
    const MAX: usize = 19;
    let mut digits = [0u8; MAX];
    let mut count = 0;
    // Candidate ends: (digit count, byte end) at group ends with 13..=19 digits.
    let mut ends = [(0usize, 0usize); MAX];
    let mut n_ends = 0;
    let mut sep = 0u8;
    let mut i = start;
    let mut groups = 0;
    loop {
        let len = run(b, i, is_digit);
        if count + len > MAX {
            break;
        }
        for k in 0..len {
            if let Some(slot) = digits.get_mut(count + k) {
                *slot = byte(b, i + k) - b'0';
            }
        }
        count += len;
        i += len;
        groups += 1;
        let bare_decimal = groups == 1 && in_decimal(b, start, i);
        if count >= 13
            && !bare_decimal
            && let Some(slot) = ends.get_mut(n_ends)
        {
            *slot = (count, i);
            n_ends += 1;
        }
        let next = byte(b, i);
        if !matches!(next, b' ' | b'-') || (sep != 0 && next != sep) || !is_digit(byte(b, i + 1)) {
            break;
        }
        sep = next;
        i += 1;
    }
    ends.iter()
        .take(n_ends)
        .rev()
        .find(|&&(n, _)| {
            let d = digits.get(..n).unwrap_or(&[]);
            luhn(d) && known_iin(d)
        })
        .map(|&(_, end)| end)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Visa, Mastercard, Amex, Discover, Diners and JCB prefixes.
fn known_iin(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    p1 == 4
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || p4 == 6011
        || p2 == 65
        || (644..=649).contains(&p3)
        || (300..=305).contains(&p3)
        || p2 == 36
        || p2 == 38
        || (3528..=3589).contains(&p4)
}

// -------------------------------------------------------------------- ssn

/// US SSN `AAA-GG-SSSS` or `AAA GG SSSS` (not inside a longer dashed digit
/// sequence), or 9 bare digits standing alone as a word. Area not 000, 666
/// or 900-999; group not 00; serial not 0000.
fn ssn(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < b.len() {
        if !is_digit(byte(b, i)) {
            i += 1;
            continue;
        }
        if let Some(end) = ssn_at(b, i) {
            emit(i, end);
            i = end;
        } else {
            i = skip_digits(b, i);
        }
    }
}

fn ssn_at(b: &[u8], s: usize) -> Option<usize> {
    let first = run(b, s, is_digit);
    let end = if first == 9 {
        let end = s + 9;
        if is_word(prev(b, s, 1)) || is_word(byte(b, end)) || in_decimal(b, s, end) {
            return None;
        }
        end
    } else if first == 3 {
        let sep = byte(b, s + 3);
        if !matches!(sep, b'-' | b' ')
            || run(b, s + 4, is_digit) != 2
            || byte(b, s + 6) != sep
            || run(b, s + 7, is_digit) != 4
        {
            return None;
        }
        let end = s + 11;
        if sep == b'-'
            && ((prev(b, s, 1) == b'-' && is_digit(prev(b, s, 2)))
                || (byte(b, end) == b'-' && is_digit(byte(b, end + 1))))
        {
            return None;
        }
        end
    } else {
        return None;
    };
    // Where the group and the serial start, after any separators.
    let (group_at, serial_at) = if first == 9 {
        (s + 3, s + 5)
    } else {
        (s + 4, s + 7)
    };
    let area = number(b, s, 3);
    let group = number(b, group_at, 2);
    let serial = number(b, serial_at, 4);
    let valid = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    valid.then_some(end)
}

// ------------------------------------------------------------------- iban

/// Known country lengths; other countries need 15-34 characters.
fn iban_length(country: [u8; 2]) -> Option<usize> {
    Some(match &country {
        b"DE" | b"GB" | b"IE" => 22,
        b"FR" | b"IT" => 27,
        b"NL" | b"DK" | b"FI" => 18,
        b"ES" | b"SE" => 24,
        b"CH" => 21,
        b"BE" => 16,
        b"AT" | b"LU" => 20,
        b"PL" => 28,
        b"NO" => 15,
        b"PT" => 25,
        _ => return None,
    })
}

/// Two uppercase letters, two check digits, then uppercase letters and
/// digits, either compact or in groups of 4 separated by single spaces (the
/// last group may be shorter); the length fits the country (or 15-34 for
/// countries not in the table) and the mod-97 check gives 1. Not glued to
/// letters or digits on either side.
fn iban(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i + 15 <= b.len() {
        if byte(b, i).is_ascii_uppercase()
            && !is_alnum(prev(b, i, 1))
            && let Some(end) = iban_at(b, i)
        {
            emit(i, end);
            i = end;
        } else {
            i += 1;
        }
    }
}

fn iban_at(b: &[u8], s: usize) -> Option<usize> {
    const MAX: usize = 34;
    let is_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    if !byte(b, s + 1).is_ascii_uppercase()
        || !is_digit(byte(b, s + 2))
        || !is_digit(byte(b, s + 3))
    {
        return None;
    }
    let mut chars = [0u8; MAX];
    // boundary[n] = byte end when the first n characters may end the IBAN.
    let mut boundary = [0usize; MAX + 1];
    let mut count = 0;
    let mut i = s;
    let grouped = byte(b, s + 4) == b' ';
    loop {
        let group = run(b, i, is_char);
        let take = if grouped { group.min(4) } else { group };
        if grouped && take < group {
            // A 5th character glued to a group: the IBAN, if any, ended
            // before this group.
            break;
        }
        if count + take > MAX {
            break;
        }
        for k in 0..take {
            if let Some(slot) = chars.get_mut(count + k) {
                *slot = byte(b, i + k);
            }
        }
        count += take;
        i += take;
        if !is_alnum(byte(b, i))
            && let Some(slot) = boundary.get_mut(count)
        {
            *slot = i;
        }
        if !grouped || take < 4 || byte(b, i) != b' ' || !is_char(byte(b, i + 1)) {
            break;
        }
        i += 1;
    }
    let check = |n: usize| -> Option<usize> {
        let end = boundary.get(n).copied().filter(|&e| e != 0)?;
        mod97(chars.get(..n)?).then_some(end)
    };
    match iban_length([byte(b, s), byte(b, s + 1)]) {
        Some(n) => check(n),
        None => (15..=count.min(MAX)).rev().find_map(check),
    }
}

fn mod97(chars: &[u8]) -> bool {
    let (head, tail) = chars.split_at(4.min(chars.len()));
    let mut r = 0u32;
    for &c in tail.iter().chain(head) {
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c.wrapping_sub(b'A')) + 10) % 97
        };
    }
    r == 1
}

// ------------------------------------------------------------------ phone

/// E.164 (`+`, a first digit 1-9, 8 to 15 digits in all, separated by at most
/// two of space, dash, dot and parentheses at a time), and the national forms
/// `(AAA) BBB-CCCC`, `AAA-BBB-CCCC`, `AAA.BBB.CCCC` (optionally after `1-`).
/// Dates, times, version numbers and bare digit runs have other shapes.
fn phone(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < b.len() {
        let c = byte(b, i);
        let found = match c {
            b'+' => e164_at(b, i).map(|end| (i, end)),
            b'(' => paren_at(b, i).map(|end| (i, end)),
            b'0'..=b'9' => national_at(b, i),
            _ => None,
        };
        if let Some((start, end)) = found {
            emit(start, end);
            i = end;
        } else if is_digit(c) {
            i = skip_digits(b, i);
        } else {
            i += 1;
        }
    }
}

fn e164_at(b: &[u8], plus: usize) -> Option<usize> {
    if is_alnum(prev(b, plus, 1)) || !matches!(byte(b, plus + 1), b'1'..=b'9') {
        return None;
    }
    let mut i = plus + 1;
    let mut digits = 0;
    let mut seps = 0;
    // The last complete group: (byte end, digits so far).
    let mut last_group = None;
    loop {
        let len = run(b, i, is_digit);
        if len > 0 {
            if digits + len > 15 {
                break;
            }
            digits += len;
            i += len;
            seps = 0;
            if is_alnum(byte(b, i)) {
                break; // glued to a word: this group is not part of the number
            }
            last_group = Some((i, digits));
            continue;
        }
        let c = byte(b, i);
        if !matches!(c, b' ' | b'-' | b'.' | b'(' | b')') || seps == 2 {
            break;
        }
        seps += 1;
        i += 1;
    }
    let (end, digits) = last_group?;
    (8..=15).contains(&digits).then_some(end)
}

/// `(AAA) BBB-CCCC`, also `(AAA)BBB-CCCC` and with `.` or a space before the
/// last group.
fn paren_at(b: &[u8], open: usize) -> Option<usize> {
    if is_alnum(prev(b, open, 1)) || run(b, open + 1, is_digit) != 3 || byte(b, open + 4) != b')' {
        return None;
    }
    let mut i = open + 5;
    if byte(b, i) == b' ' {
        i += 1;
    }
    if run(b, i, is_digit) != 3
        || !matches!(byte(b, i + 3), b'-' | b'.' | b' ')
        || run(b, i + 4, is_digit) != 4
    {
        return None;
    }
    let end = i + 8;
    let sep = byte(b, i + 3);
    if is_alnum(byte(b, end)) || (byte(b, end) == sep && is_digit(byte(b, end + 1))) {
        return None;
    }
    Some(end)
}

/// `AAA-BBB-CCCC` or `AAA.BBB.CCCC`, optionally `1-AAA-BBB-CCCC`; `s` starts a
/// digit run.
fn national_at(b: &[u8], s: usize) -> Option<(usize, usize)> {
    let first = run(b, s, is_digit);
    let sep = byte(b, s + first);
    if !matches!(sep, b'-' | b'.') {
        return None;
    }
    let body = if first == 1 && byte(b, s) == b'1' {
        s + 2
    } else if first == 3 {
        s
    } else {
        return None;
    };
    if run(b, body, is_digit) != 3
        || byte(b, body + 3) != sep
        || run(b, body + 4, is_digit) != 3
        || byte(b, body + 7) != sep
        || run(b, body + 8, is_digit) != 4
    {
        return None;
    }
    let end = body + 12;
    let glued_before = is_alnum(prev(b, s, 1)) || (prev(b, s, 1) == sep && is_digit(prev(b, s, 2)));
    let glued_after = is_alnum(byte(b, end)) || (byte(b, end) == sep && is_digit(byte(b, end + 1)));
    if glued_before || glued_after {
        return None;
    }
    Some((s, end))
}

// -------------------------------------------------------------- cloud key

/// AWS access key ids, GCP API keys, GitHub, Slack and Stripe live tokens,
/// each not glued to a preceding letter or digit.
fn cloud_key(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < b.len() {
        if matches!(byte(b, i), b'A' | b'g' | b'x' | b's' | b'r')
            && !is_alnum(prev(b, i, 1))
            && let Some(end) = key_at(b, i)
        {
            emit(i, end);
            i = end;
        } else {
            i += 1;
        }
    }
}

fn key_at(b: &[u8], s: usize) -> Option<usize> {
    let rest = b.get(s..)?;
    let upper_alnum = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let b64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let exact =
        |from: usize, n: usize, class: &dyn Fn(u8) -> bool, next_ok: &dyn Fn(u8) -> bool| {
            (run(b, from, class) == n && next_ok(byte(b, from + n))).then_some(from + n)
        };
    let at_least = |from: usize, min: usize, max: usize, class: &dyn Fn(u8) -> bool| {
        let n = run(b, from, class);
        (min..=max).contains(&n).then_some(from + n)
    };
    if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
        // Exactly 16 more: a longer run is some other identifier.
        return exact(s + 4, 16, &upper_alnum, &|c| !is_alnum(c));
    }
    if rest.starts_with(b"AIza") {
        return exact(s + 4, 35, &b64url, &|c| !b64url(c));
    }
    if rest.starts_with(b"github_pat_") {
        return at_least(s + 11, 82, 244, &is_word);
    }
    if rest.len() >= 4
        && rest.starts_with(b"gh")
        && matches!(byte(rest, 2), b'p' | b'o' | b'u' | b's' | b'r')
        && byte(rest, 3) == b'_'
    {
        let end = at_least(s + 4, 36, 251, &is_alnum)?;
        return (byte(b, end) != b'_').then_some(end);
    }
    if rest.starts_with(b"xox") && matches!(byte(rest, 3), b'b' | b'a' | b'p' | b'r' | b's') {
        if byte(rest, 4) != b'-' {
            return None;
        }
        let mut end = s + 5 + run(b, s + 5, |c| is_alnum(c) || c == b'-');
        while end > s + 5 && prev(b, end, 1) == b'-' {
            end -= 1;
        }
        return (end - (s + 5) >= 10).then_some(end);
    }
    if rest.starts_with(b"sk_live_") || rest.starts_with(b"rk_live_") {
        return at_least(s + 8, 24, usize::MAX, &is_alnum);
    }
    None
}

// -------------------------------------------------------------------- jwt

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `header.payload.signature` in base64url (the signature may be empty; a
/// JWE's two extra segments are included), where the header decodes to a
/// JSON object that mentions `"alg"`. A JSON object always encodes to a
/// first character `e`, which is the anchor.
fn jwt(b: &[u8], emit: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < b.len() {
        if byte(b, i) == b'e'
            && !is_b64url(prev(b, i, 1))
            && let Some(end) = jwt_at(b, i)
        {
            emit(i, end);
            i = end;
        } else {
            i += 1;
        }
    }
}

fn jwt_at(b: &[u8], s: usize) -> Option<usize> {
    let header_end = s + run(b, s, is_b64url);
    if byte(b, header_end) != b'.' {
        return None;
    }
    let payload = run(b, header_end + 1, is_b64url);
    let payload_end = header_end + 1 + payload;
    if payload == 0 || byte(b, payload_end) != b'.' {
        return None;
    }
    let mut end = payload_end + 1 + run(b, payload_end + 1, is_b64url);
    let mut segments = 3;
    while segments < 5 && byte(b, end) == b'.' && is_b64url(byte(b, end + 1)) {
        end += 1 + run(b, end + 1, is_b64url);
        segments += 1;
    }
    header_is_jose(b.get(s..header_end)?).then_some(end)
}

fn b64url_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Decodes the segment on the fly (no allocation): a JSON object, after
/// optional whitespace, that contains `"alg"` and ends with `}`.
fn header_is_jose(segment: &[u8]) -> bool {
    if segment.len() % 4 == 1 {
        return false;
    }
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut opened = false;
    let mut window = [0u8; 5];
    let mut has_alg = false;
    let mut last = 0u8;
    for &c in segment {
        let Some(v) = b64url_value(c) else {
            return false;
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits < 8 {
            continue;
        }
        bits -= 8;
        let decoded = ((acc >> bits) & 0xff) as u8;
        acc &= (1 << bits) - 1;
        if decoded.is_ascii_whitespace() {
            continue;
        }
        if !opened {
            if decoded != b'{' {
                return false;
            }
            opened = true;
        }
        window.rotate_left(1);
        window[4] = decoded;
        has_alg |= &window == b"\"alg\"";
        last = decoded;
    }
    opened && has_alg && last == b'}'
}

// ------------------------------------------------------------ private key

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &[u8] = b"-----";

/// `-----BEGIN <label>-----` where the label ends in `PRIVATE KEY` (or
/// `PRIVATE KEY BLOCK`, for PGP) through the matching `-----END <label>-----`,
/// or to the end of the text when that END is missing (fail closed).
fn private_key(text: &str, emit: &mut impl FnMut(usize, usize)) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text.get(from..).and_then(|t| t.find(BEGIN)) {
        let start = from + off;
        let label_start = start + BEGIN.len();
        let label_end = label_start
            + run(b, label_start, |c| {
                c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
            });
        let label = b.get(label_start..label_end).unwrap_or(&[]);
        let is_private = label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK");
        let closed = b.get(label_end..).is_some_and(|r| r.starts_with(DASHES));
        // A BEGIN line cut short at the end of the text still fails closed.
        if !is_private || !(closed || label_end == b.len()) {
            from = label_start;
            continue;
        }
        let end = matching_end(text, label_end, label).unwrap_or(b.len());
        emit(start, end);
        from = end;
    }
}

fn matching_end(text: &str, from: usize, label: &[u8]) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = from;
    loop {
        let at = from + text.get(from..)?.find(END)? + END.len();
        let rest = b.get(at..)?;
        if rest.starts_with(label) && rest.get(label.len()..)?.starts_with(DASHES) {
            return Some(at + label.len() + DASHES.len());
        }
        from = at;
    }
}
