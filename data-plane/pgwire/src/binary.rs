//! PostgreSQL's text form of binary-format values of its own types.
//!
//! Drivers such as asyncpg ask for every result column in binary, and bind
//! parameters in binary. The agent reads such values as PostgreSQL would
//! print them: to run masking detectors over them as over text results, and
//! to record parameters in the audit trail. [`text_of`] knows the built-in
//! scalar types drivers use most (booleans, integers, floats, `numeric`,
//! text types, `json`/`jsonb`, `uuid`), arrays of those, anonymous records
//! and the built-in ranges and multiranges of numbers; for anything else
//! it returns `None`, and the caller decides (the masker treats such a
//! value as possibly holding text). [`text_of_with`] also reads the
//! database's own types (enums, composites, domains, ranges, multiranges
//! and arrays of them) by the [`Form`] the caller finds in the target's
//! catalog. Floats are written in Rust's shortest form, which has the same
//! digits as PostgreSQL's but no exponent (`1e+20` reads
//! `100000000000000000000`).
//!
//! [`textless_text`] reads dates, times, timestamps, intervals and network
//! addresses, also inside arrays, records and ranges by [`Form::Textless`]:
//! for the audit trail only, the masker does not read them (they hold no
//! text a detector could find).
//!
//! The input comes from the database or the client, and nothing here
//! trusts it: every length is checked, element counts are bounded by the
//! bytes present, nesting is bounded, and so is the text made: a value
//! whose text would pass [`text_limit`] is not read (`None`), as a few
//! bytes of `numeric` can print as 131,072 digits and an array holds
//! thousands of them.

use std::fmt::Write as _;

/// Deepest nesting read (records within arrays within records...).
const MAX_DEPTH: usize = 8;

/// The longest text read from `len` bytes: eight times their length and a
/// mebibyte. Text forms are at most a few times their binary forms but for
/// `numeric`'s zeros (its weight and display scale) and quoting at depth,
/// and no single `numeric` prints longer than the mebibyte.
pub fn text_limit(len: usize) -> usize {
    len.saturating_mul(8).saturating_add(1 << 20)
}

/// Text types: their binary form is the text itself.
const TEXT_TYPES: [i32; 7] = [25, 1043, 1042, 19, 705, 114, 142];

/// The built-in containers read here: arrays by their element type,
/// ranges by their subtype, multiranges by their range type.
fn builtin_form(oid: i32) -> Option<Form> {
    use Form::{Array, Multirange, Range};
    Some(match oid {
        1000 => Array(16),        // bool[]
        1005 => Array(21),        // int2[]
        1007 => Array(23),        // int4[]
        1016 => Array(20),        // int8[]
        1028 => Array(26),        // oid[]
        1021 => Array(700),       // float4[]
        1022 => Array(701),       // float8[]
        1231 => Array(1700),      // numeric[]
        1009 => Array(25),        // text[]
        1015 => Array(1043),      // varchar[]
        1014 => Array(1042),      // bpchar[]
        1003 => Array(19),        // name[]
        199 => Array(114),        // json[]
        143 => Array(142),        // xml[]
        3807 => Array(3802),      // jsonb[]
        2951 => Array(2950),      // uuid[]
        2287 => Array(2249),      // record[]
        1182 => Array(1082),      // date[] (elements: see `textless_form`)
        1183 => Array(1083),      // time[]
        1115 => Array(1114),      // timestamp[]
        1185 => Array(1184),      // timestamptz[]
        1187 => Array(1186),      // interval[]
        1041 => Array(869),       // inet[]
        651 => Array(650),        // cidr[]
        3905 => Array(3904),      // int4range[]
        3927 => Array(3926),      // int8range[]
        3907 => Array(3906),      // numrange[]
        3909 => Array(3908),      // tsrange[]
        3911 => Array(3910),      // tstzrange[]
        3913 => Array(3912),      // daterange[]
        6150 => Array(4451),      // int4multirange[]
        6157 => Array(4536),      // int8multirange[]
        6151 => Array(4532),      // nummultirange[]
        6152 => Array(4533),      // tsmultirange[]
        6153 => Array(4534),      // tstzmultirange[]
        6155 => Array(4535),      // datemultirange[]
        3904 => Range(23),        // int4range
        3926 => Range(20),        // int8range
        3906 => Range(1700),      // numrange
        3908 => Range(1114),      // tsrange
        3910 => Range(1184),      // tstzrange
        3912 => Range(1082),      // daterange
        4451 => Multirange(3904), // int4multirange
        4536 => Multirange(3926), // int8multirange
        4532 => Multirange(3906), // nummultirange
        4533 => Multirange(3908), // tsmultirange
        4534 => Multirange(3910), // tstzmultirange
        4535 => Multirange(3912), // datemultirange
        _ => return None,
    })
}

/// How values of a type [`text_of`] does not know are sent: what the
/// target's catalog says of it (`typtype`, `typelem`, `typbasetype`,
/// `rngsubtype`, `typsend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The text itself: enums (their label), and types sent as text such
    /// as `citext`.
    Text,
    /// A composite type: sent as an anonymous record is.
    Record,
    /// An array of this element type.
    Array(i32),
    /// A domain over this base type: sent as the base type is.
    Domain(i32),
    /// A range of this subtype.
    Range(i32),
    /// A multirange of this range type.
    Multirange(i32),
    /// A type whose values cannot hold text (dates, times, network
    /// addresses...): written as `?`, so the text is PostgreSQL's but for
    /// such values. For readers that only look for text in the value.
    Opaque,
    /// A `date`, `time`, `timestamp`, `timestamptz`, `interval`, `inet` or
    /// `cidr`, read by [`textless_text`] (see [`textless_form`]).
    Textless,
}

/// [`Form::Textless`] for the types [`textless_text`] reads: a reader that
/// wants them read (the audit trail; the masker does not, they hold no
/// text a detector could find) answers its forms with this first.
pub fn textless_form(oid: i32) -> Option<Form> {
    matches!(oid, 1082 | 1083 | 1114 | 1184 | 1186 | 869 | 650).then_some(Form::Textless)
}

/// PostgreSQL's text form of `v`, a binary-format value of type `oid`, or
/// `None` for a type not read here or bytes that are not a valid value.
pub fn text_of(oid: i32, v: &[u8]) -> Option<String> {
    text_of_with(oid, v, &|_| None)
}

/// [`text_of`], reading each type it does not know (at any depth: an
/// element, a field, a range bound) by `forms`.
pub fn text_of_with(oid: i32, v: &[u8], forms: &dyn Fn(i32) -> Option<Form>) -> Option<String> {
    let mut out = String::new();
    let limit = text_limit(v.len());
    Reading { forms, limit }.value(oid, v, 0, &mut out)?;
    Some(out)
}

/// A binary `date`, `time`, `timestamp`, `timestamptz`, `interval`,
/// `inet` or `cidr` as PostgreSQL prints it with `DateStyle` ISO and
/// `IntervalStyle` postgres (a `timestamptz` in UTC, `+00`), or `None` for
/// another type or bytes that are not such a value. Binary dates and times
/// count days or microseconds from 2000-01-01.
pub fn textless_text(oid: i32, v: &[u8]) -> Option<String> {
    const DAY_US: i64 = 86_400_000_000;
    let mut out = String::new();
    let int = |at: usize| v.get(at..at + 4)?.try_into().ok().map(i32::from_be_bytes);
    match (oid, v.len()) {
        (1186, 16) => {
            let time = i64::from_be_bytes(v[..8].try_into().ok()?);
            push_interval(&mut out, time, int(8)?, int(12)?);
        }
        (869 | 650, _) => push_address(&mut out, oid == 650, v)?,
        (1082, 4) => match i32::from_be_bytes(v.try_into().ok()?) {
            i32::MIN => out.push_str("-infinity"),
            i32::MAX => out.push_str("infinity"),
            days => {
                let bc = push_date(&mut out, i64::from(days));
                out.push_str(bc);
            }
        },
        (1114 | 1184, 8) => match i64::from_be_bytes(v.try_into().ok()?) {
            i64::MIN => out.push_str("-infinity"),
            i64::MAX => out.push_str("infinity"),
            us => {
                let bc = push_date(&mut out, us.div_euclid(DAY_US));
                out.push(' ');
                push_time(&mut out, us.rem_euclid(DAY_US).unsigned_abs());
                if oid == 1184 {
                    out.push_str("+00");
                }
                out.push_str(bc);
            }
        },
        (1083, 8) => {
            let us = i64::from_be_bytes(v.try_into().ok()?);
            // 24:00:00 is a valid time.
            if !(0..=DAY_US).contains(&us) {
                return None;
            }
            push_time(&mut out, us.unsigned_abs());
        }
        _ => return None,
    }
    Some(out)
}

/// Writes the date `days` after 2000-01-01 as `YYYY-MM-DD` (the proleptic
/// Gregorian calendar, as PostgreSQL's); gives the era suffix, `" BC"` for
/// years before 1 (year 0 is 1 BC).
fn push_date(out: &mut String, days: i64) -> &'static str {
    // Days from 1970-01-01, then H. Hinnant's civil_from_days.
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (year, era) = if year > 0 {
        (year, "")
    } else {
        (1 - year, " BC")
    };
    let _ = write!(out, "{year:04}-{month:02}-{day:02}");
    era
}

/// Writes an interval as PostgreSQL's `postgres` style does: years,
/// months and days each with its own sign (`+` after a negative part),
/// then the time, or `00:00:00` for nothing at all.
fn push_interval(out: &mut String, time: i64, days: i32, months: i32) {
    let mut empty = true;
    let mut after_negative = false;
    let mut part = |out: &mut String, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let space = if empty { "" } else { " " };
        let plus = if after_negative && value > 0 { "+" } else { "" };
        let plural = if value == 1 { "" } else { "s" };
        let _ = write!(out, "{space}{plus}{value} {unit}{plural}");
        after_negative = value < 0;
        empty = false;
    };
    part(out, i64::from(months / 12), "year");
    part(out, i64::from(months % 12), "mon");
    part(out, i64::from(days), "day");
    if empty || time != 0 {
        if !empty {
            out.push(' ');
        }
        if time < 0 {
            out.push('-');
        } else if after_negative {
            out.push('+');
        }
        push_time(out, time.unsigned_abs());
    }
}

/// Writes an `inet` or `cidr` value (family, prefix bits, is-cidr flag,
/// address length, address) as PostgreSQL does: the prefix is left out of
/// an `inet` naming one host.
fn push_address(out: &mut String, cidr: bool, v: &[u8]) -> Option<()> {
    let (&[family, bits, _, len], address) = v.split_first_chunk::<4>()?;
    let max = match (family, len, address.len()) {
        (2, 4, 4) => {
            let _ = write!(
                out,
                "{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(address).ok()?)
            );
            32
        }
        (3, 16, 16) => {
            let octets = <[u8; 16]>::try_from(address).ok()?;
            // An IPv4-compatible address (::a.b.c.d) keeps its IPv4 form,
            // as in PostgreSQL; Rust writes it in hex.
            if octets[..12].iter().all(|b| *b == 0) && octets[12..14] != [0, 0] {
                let [.., a, b, c, d] = octets;
                let _ = write!(out, "::{a}.{b}.{c}.{d}");
            } else {
                let _ = write!(out, "{}", std::net::Ipv6Addr::from(octets));
            }
            128
        }
        _ => return None,
    };
    if bits > max {
        return None;
    }
    if cidr || bits != max {
        let _ = write!(out, "/{bits}");
    }
    Some(())
}

/// Writes `us` microseconds as `HH:MM:SS` (hours past 24 for an interval),
/// with the fraction's significant digits when there is one.
fn push_time(out: &mut String, us: u64) {
    let secs = us / 1_000_000;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let fraction = us % 1_000_000;
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

fn push(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

/// Big-endian reader over a value's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A length-prefixed value: `Some(None)` for NULL (-1).
    fn value(&mut self) -> Option<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Some(None),
            n => Some(Some(self.take(usize::try_from(n).ok()?)?)),
        }
    }

    fn done(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// `numeric_send`: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then the digits; read as `numeric_recv` stores
/// them (digits past the display scale cut, leading zero digits dropped,
/// a zero positive) and printed as `get_str_from_var`.
fn numeric(v: &[u8], out: &mut String) -> Option<()> {
    let mut r = Reader(v);
    let ndigits = usize::from(r.u16()?);
    let mut weight = i32::from(r.u16()?.cast_signed());
    let sign = r.u16()?;
    let dscale = r.u16()?;
    let mut digits: Vec<u16> = (0..ndigits).map(|_| r.u16()).collect::<Option<_>>()?;
    r.done()?;
    if ndigits > 0x7fff || dscale > 0x3fff || digits.iter().any(|d| *d > 9999) {
        return None;
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xc000 => return (ndigits == 0).then(|| out.push_str("NaN")),
        0xd000 => return (ndigits == 0).then(|| out.push_str("Infinity")),
        0xf000 => return (ndigits == 0).then(|| out.push_str("-Infinity")),
        _ => return None,
    }
    // `trunc_var` to the display scale, then `make_result`'s stripping.
    let kept = usize::try_from(weight + 1 + (i32::from(dscale) + 3) / 4).unwrap_or(0);
    digits.truncate(kept);
    if let (Some(last), 1..=3) = (digits.get_mut(kept.wrapping_sub(1)), dscale % 4) {
        *last -= *last % 10u16.pow(u32::from(4 - dscale % 4));
    }
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    weight -= i32::try_from(leading).ok()?;
    if digits.is_empty() {
        weight = 0;
    } else if sign == 0x4000 {
        out.push('-');
    }
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    if weight < 0 {
        out.push('0');
    } else {
        push(out, digit(0));
        for i in 1..=weight {
            let _ = write!(out, "{:04}", digit(i));
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < usize::from(dscale) {
            let _ = write!(out, "{:04}", digit(i));
            i += 1;
        }
        out.truncate(start + usize::from(dscale));
    }
    Some(())
}

/// One reading of a value: how to read the types not built in, and the
/// longest text it may make.
struct Reading<'a> {
    forms: &'a dyn Fn(i32) -> Option<Form>,
    limit: usize,
}

impl Reading<'_> {
    /// `None` once `out` is longer than the reading may make: containers
    /// ask after each element, so no more than one element's text past
    /// the limit is ever made.
    fn fits(&self, out: &str) -> Option<()> {
        (out.len() <= self.limit).then_some(())
    }

    fn value(&self, oid: i32, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match (oid, v.len()) {
            (16, 1) => out.push_str(if v[0] == 0 { "f" } else { "t" }),
            (21, 2) => push(out, i16::from_be_bytes(v.try_into().ok()?)),
            (23, 4) => push(out, i32::from_be_bytes(v.try_into().ok()?)),
            (26, 4) => push(out, u32::from_be_bytes(v.try_into().ok()?)),
            (20, 8) => push(out, i64::from_be_bytes(v.try_into().ok()?)),
            (700, 4) => push(out, f32::from_be_bytes(v.try_into().ok()?)),
            (701, 8) => push(out, f64::from_be_bytes(v.try_into().ok()?)),
            (1700, _) => numeric(v, out)?,
            (3802, n) if n >= 1 && v[0] == 1 => out.push_str(std::str::from_utf8(&v[1..]).ok()?),
            (2950, 16) => {
                let h = hex::encode(v);
                let _ = write!(
                    out,
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                );
            }
            (2249, _) => self.record(v, depth, out)?,
            (t, _) if TEXT_TYPES.contains(&t) => out.push_str(std::str::from_utf8(v).ok()?),
            (t, _) => match builtin_form(t).or_else(|| (self.forms)(t))? {
                Form::Text => out.push_str(std::str::from_utf8(v).ok()?),
                Form::Record => self.record(v, depth, out)?,
                Form::Array(element) => self.array(element, v, depth, out)?,
                Form::Domain(base) => self.value(base, v, depth + 1, out)?,
                Form::Range(subtype) => self.range(subtype, v, depth, out)?,
                Form::Multirange(range) => self.multirange(range, v, depth, out)?,
                Form::Opaque => out.push('?'),
                Form::Textless => out.push_str(&textless_text(t, v)?),
            },
        }
        self.fits(out)
    }

    /// `array_send`: dimensions, a has-nulls flag, the element type, each
    /// dimension's length and lower bound, then the elements; printed as
    /// `array_out` (bounds shown only when one is not 1).
    fn array(&self, element: i32, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
        let mut r = Reader(v);
        let ndim = usize::try_from(r.i32()?).ok()?;
        let flags = r.i32()?;
        if r.i32()? != element || ndim > 6 || !(0..=1).contains(&flags) {
            return None;
        }
        let mut dims = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            let len = usize::try_from(r.i32()?).ok()?;
            let lower = r.i32()?;
            dims.push((len, lower));
        }
        let count = dims
            .iter()
            .try_fold(1usize, |n, (len, _)| n.checked_mul(*len))?;
        if count == 0 || ndim == 0 {
            out.push_str("{}");
            return r.done();
        }
        // Each element takes at least its four length bytes.
        if count > r.0.len() / 4 {
            return None;
        }
        if dims.iter().any(|(_, lower)| *lower != 1) {
            for (len, lower) in &dims {
                let upper = i64::from(*lower) + i64::try_from(*len).ok()? - 1;
                let _ = write!(out, "[{lower}:{upper}]");
            }
            out.push('=');
        }
        let lens: Vec<usize> = dims.iter().map(|(len, _)| *len).collect();
        self.array_level(&lens, element, &mut r, depth, out)?;
        r.done()
    }

    fn array_level(
        &self,
        lens: &[usize],
        element: i32,
        r: &mut Reader<'_>,
        depth: usize,
        out: &mut String,
    ) -> Option<()> {
        let (len, inner) = lens.split_first()?;
        out.push('{');
        for i in 0..*len {
            if i > 0 {
                out.push(',');
            }
            if inner.is_empty() {
                match r.value()? {
                    None => out.push_str("NULL"),
                    Some(bytes) => {
                        let mut text = String::new();
                        self.value(element, bytes, depth + 1, &mut text)?;
                        quote_array_element(&text, out);
                    }
                }
            } else {
                self.array_level(inner, element, r, depth, out)?;
            }
            self.fits(out)?;
        }
        out.push('}');
        Some(())
    }

    /// `record_send`: the field count, then each field's type and value;
    /// printed as `record_out` (a NULL field is empty).
    fn record(&self, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
        let mut r = Reader(v);
        let count = usize::try_from(r.i32()?).ok()?;
        // Each field takes at least its type and length.
        if count > r.0.len() / 8 {
            return None;
        }
        out.push('(');
        for i in 0..count {
            if i > 0 {
                out.push(',');
            }
            let oid = r.i32()?;
            if let Some(bytes) = r.value()? {
                let mut text = String::new();
                self.value(oid, bytes, depth + 1, &mut text)?;
                quote_record_field(&text, out);
                self.fits(out)?;
            }
        }
        out.push(')');
        r.done()
    }

    /// `multirange_send`: the range count, then each range as a length and
    /// its `range_send` form; printed as `multirange_out` (the ranges in
    /// braces, unquoted).
    fn multirange(&self, range: i32, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
        let mut r = Reader(v);
        let count = usize::try_from(r.i32()?).ok()?;
        // Each range takes at least its length and flags.
        if count > r.0.len() / 5 {
            return None;
        }
        out.push('{');
        for i in 0..count {
            if i > 0 {
                out.push(',');
            }
            self.value(range, r.value()??, depth + 1, out)?;
        }
        out.push('}');
        r.done()
    }

    /// `range_send`: a flags byte, then each finite bound as a length and the
    /// subtype's value; printed as `range_out` (`empty`, or the bounds in
    /// brackets, an infinite one empty).
    fn range(&self, subtype: i32, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
        const EMPTY: u8 = 0x01;
        const LOWER_INCLUSIVE: u8 = 0x02;
        const UPPER_INCLUSIVE: u8 = 0x04;
        const LOWER_INFINITE: u8 = 0x08;
        const UPPER_INFINITE: u8 = 0x10;
        let mut r = Reader(v);
        let flags = *r.take(1)?.first()?;
        // The NULL-bound flags are never sent, nor containment.
        if flags & 0xe0 != 0 {
            return None;
        }
        if flags & EMPTY != 0 {
            out.push_str("empty");
            return r.done();
        }
        out.push(if flags & LOWER_INCLUSIVE != 0 {
            '['
        } else {
            '('
        });
        for (i, infinite) in [LOWER_INFINITE, UPPER_INFINITE].into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if flags & infinite == 0 {
                let bytes = r.value()??;
                let mut text = String::new();
                self.value(subtype, bytes, depth + 1, &mut text)?;
                quote_range_bound(&text, out);
                self.fits(out)?;
            }
        }
        out.push(if flags & UPPER_INCLUSIVE != 0 {
            ']'
        } else {
            ')'
        });
        r.done()
    }
}

/// `array_out`'s quoting: empty, `NULL`, or holding a delimiter, brace,
/// quote, backslash or white space; quotes and backslashes are escaped.
fn quote_array_element(text: &str, out: &mut String) {
    let needs = text.eq_ignore_ascii_case("null") || needs_quotes(text, &['{', '}', ',']);
    push_quoted(text, needs, Some('\\'), out);
}

/// `record_out`'s quoting: empty, or holding a parenthesis, comma, quote,
/// backslash or white space; quotes and backslashes are doubled.
fn quote_record_field(text: &str, out: &mut String) {
    push_quoted(text, needs_quotes(text, &['(', ')', ',']), None, out);
}

/// `range_bound_escape`'s quoting: a record field's, brackets too.
fn quote_range_bound(text: &str, out: &mut String) {
    let needs = needs_quotes(text, &['(', ')', '[', ']', ',']);
    push_quoted(text, needs, None, out);
}

/// Whether an output function quotes `text`: empty, or holding a quote, a
/// backslash, white space (as PostgreSQL's `isspace` sees it) or one of
/// the container's own `delimiters`.
fn needs_quotes(text: &str, delimiters: &[char]) -> bool {
    text.is_empty()
        || text.chars().any(|c| {
            matches!(c, '"' | '\\' | ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
                || delimiters.contains(&c)
        })
}

/// `text` as is, or when `needs`, in double quotes with each quote and
/// backslash preceded by `escape` (doubled when `None`).
fn push_quoted(text: &str, needs: bool, escape: Option<char>, out: &mut String) {
    if !needs {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push(escape.unwrap_or(c));
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::{text_of, textless_text};

    #[test]
    fn dates_times_intervals_and_addresses_read_as_postgresql_prints_them() {
        // Binary values from PostgreSQL's own `*_send` functions, and its
        // output with TimeZone UTC and DateStyle ISO.
        let cases: &[(i32, &str, &str)] = &[
            (1082, "00000000", "2000-01-01"),
            (1082, "ffffffff", "1999-12-31"),
            (1082, "00002660", "2026-11-24"),
            (1082, "fff4dbf9", "0001-01-01"),
            (1082, "fff4dbf8", "0001-12-31 BC"),
            (1082, "fff49d7b", "0044-03-15 BC"),
            (1082, "ffda97cd", "4713-01-01 BC"),
            (1082, "7fda970c", "5874897-12-31"),
            (1082, "7fffffff", "infinity"),
            (1082, "80000000", "-infinity"),
            (1184, "ff1af9e776351120", "0044-03-15 10:11:12.5+00 BC"),
            (1184, "0002ea5dbb1513b8", "2026-01-02 03:04:05.00012+00"),
            (1184, "ffffffffffffffff", "1999-12-31 23:59:59.999999+00"),
            (1184, "7fffffffffffffff", "infinity"),
            (1114, "fffffffffff0bdc0", "1999-12-31 23:59:59"),
            (1114, "7fffff5bb3b29fff", "294276-12-31 23:59:59.999999"),
            (1114, "fd0f7fbdaf17e000", "4713-01-01 00:00:00 BC"),
            (1083, "000000141dd75fff", "23:59:59.999999"),
            (1083, "000000141dd76000", "24:00:00"),
            (1083, "0000000000000000", "00:00:00"),
            (1083, "0000000a7a3708a0", "12:30:00.1"),
            (1186, "00000000000000000000000000000000", "00:00:00"),
            (
                1186,
                "000000036c9361a0000000030000000e",
                "1 year 2 mons 3 days 04:05:06.5",
            ),
            (1186, "000000000000000000000002fffffff4", "-1 years +2 days"),
            (1186, "ffffffff296c5c000000000100000000", "1 day -01:00:00"),
            (1186, "00000019254d38000000000000000000", "30:00:00"),
            (1186, "ffffffffffffffff0000000000000000", "-00:00:00.000001"),
            (1186, "00000000000000000000000000000001", "1 mon"),
            (1186, "0000000000000000fffffffdfffffffe", "-2 mons -3 days"),
            (1186, "0000000000000000ffffffff00000000", "-1 days"),
            (
                1186,
                "0000000000000000000000007fffffff",
                "178956970 years 7 mons",
            ),
            (
                1186,
                "000000035a4e9000fffffffd00000000",
                "-3 days +04:00:00",
            ),
            (869, "02200004c0a80001", "192.168.0.1"),
            (869, "020800040a010203", "10.1.2.3/8"),
            (869, "0200000400000000", "0.0.0.0/0"),
            (869, "0380001000000000000000000000000000000001", "::1"),
            (
                869,
                "0340001020010db8000000000000000000000001",
                "2001:db8::1/64",
            ),
            (
                869,
                "0380001000000000000000000000ffff01020304",
                "::ffff:1.2.3.4",
            ),
            (
                869,
                "03800010fe800000000000000001000000000001",
                "fe80::1:0:0:1",
            ),
            (
                869,
                "0380001020010db8000000000001000000000001",
                "2001:db8::1:0:0:1",
            ),
            (869, "0380001000000000000000000000000000000000", "::"),
            (869, "0380001000010000000000000000000000000000", "1::"),
            (869, "0380001000000000000000000000000001020304", "::1.2.3.4"),
            (650, "020801040a000000", "10.0.0.0/8"),
            (650, "02180104c0a80100", "192.168.1.0/24"),
            (
                650,
                "0320011020010db8000000000000000000000000",
                "2001:db8::/32",
            ),
            (650, "0220010401020304", "1.2.3.4/32"),
        ];
        for (oid, bytes, text) in cases {
            let bytes = hex::decode(bytes).unwrap();
            assert_eq!(
                textless_text(*oid, &bytes).as_deref(),
                Some(*text),
                "{oid} {text}"
            );
        }
        // Wrong lengths, a time past midnight, other types.
        assert_eq!(textless_text(1082, &[0; 8]), None);
        assert_eq!(textless_text(1184, &[0; 4]), None);
        assert_eq!(textless_text(1083, &(-1i64).to_be_bytes()), None);
        assert_eq!(textless_text(1083, &86_400_000_001i64.to_be_bytes()), None);
        assert_eq!(textless_text(23, &[0; 4]), None);
        assert_eq!(textless_text(1186, &[0; 12]), None);
        // An address: too short, a family it does not know, a length that
        // does not match, more prefix bits than the address has.
        for bad in [
            "0220",
            "0420000401020304",
            "0220000801020304",
            "02210004c0a80001",
        ] {
            assert_eq!(
                textless_text(869, &hex::decode(bad).unwrap()),
                None,
                "{bad}"
            );
        }
    }

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(digits.len()).unwrap().to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    fn array(element: i32, dims: &[(i32, i32)], values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&i32::try_from(dims.len()).unwrap().to_be_bytes());
        v.extend_from_slice(&i32::from(values.iter().any(Option::is_none)).to_be_bytes());
        v.extend_from_slice(&element.to_be_bytes());
        for (len, lower) in dims {
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&lower.to_be_bytes());
        }
        for value in values {
            match value {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&i32::try_from(b.len()).unwrap().to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    #[test]
    fn numerics_read_as_postgresql_prints_them() {
        let text = |v: Vec<u8>| text_of(1700, &v);
        assert_eq!(text(numeric(0, 0, 0, &[])).as_deref(), Some("0"));
        assert_eq!(text(numeric(0, 0, 2, &[1, 5000])).as_deref(), Some("1.50"));
        assert_eq!(
            text(numeric(3, 0, 0, &[4111, 1111, 1111, 1111])).as_deref(),
            Some("4111111111111111")
        );
        assert_eq!(
            text(numeric(1, 0x4000, 3, &[12, 3456, 7800])).as_deref(),
            Some("-123456.780")
        );
        assert_eq!(text(numeric(-2, 0, 8, &[1])).as_deref(), Some("0.00000001"));
        assert_eq!(text(numeric(2, 0, 0, &[1])).as_deref(), Some("100000000"));
        assert_eq!(text(numeric(0, 0xc000, 0, &[])).as_deref(), Some("NaN"));
        assert_eq!(
            text(numeric(0, 0xf000, 0, &[])).as_deref(),
            Some("-Infinity")
        );
        // A digit out of range, a bad sign, a short or long value.
        assert_eq!(text(numeric(0, 0, 0, &[10000])), None);
        assert_eq!(text(numeric(0, 0x1234, 0, &[1])), None);
        assert_eq!(text_of(1700, &[0, 1, 0, 0, 0, 0, 0]), None);
        let mut long = numeric(0, 0, 0, &[1]);
        long.push(0);
        assert_eq!(text_of(1700, &long), None);
        // Read as `numeric_recv` stores them: cut at the display scale
        // (not rounded), leading zero digits dropped, zero never negative,
        // and no digits is zero whatever the weight.
        assert_eq!(text(numeric(1, 0, 0, &[0, 5])).as_deref(), Some("5"));
        assert_eq!(text(numeric(0, 0, 0, &[7, 9999])).as_deref(), Some("7"));
        assert_eq!(text(numeric(0, 0, 2, &[1, 5678])).as_deref(), Some("1.56"));
        assert_eq!(text(numeric(0, 0x4000, 1, &[0, 5])).as_deref(), Some("0.0"));
        assert_eq!(text(numeric(0, 0x4000, 0, &[])).as_deref(), Some("0"));
        assert_eq!(text(numeric(0x7fff, 0, 0, &[])).as_deref(), Some("0"));
        assert_eq!(text(numeric(-3, 0x4000, 2, &[1])).as_deref(), Some("0.00"));
    }

    #[test]
    fn text_longer_than_the_limit_is_not_made() {
        // Ten bytes of numeric print as 131,069 digits, within the limit.
        let huge = numeric(0x7fff, 0, 0, &[1]);
        let one = text_of(1700, &huge).unwrap();
        assert_eq!(one.len(), 1 + 4 * 0x7fff);
        assert!(one.starts_with("10000") && one.bytes().skip(1).all(|b| b == b'0'));
        // A hundred of them in an array would make 13 MB from 1.4 kB:
        // refused, and so within records and ranges.
        let elements: Vec<Option<&[u8]>> = vec![Some(&huge[..]); 100];
        let many = array(1700, &[(100, 1)], &elements);
        assert!(super::text_limit(many.len()) < 100 * one.len());
        assert_eq!(text_of(1231, &many), None);
        let mut record = 100i32.to_be_bytes().to_vec();
        for _ in 0..100 {
            record.extend(1700i32.to_be_bytes());
            record.extend(i32::try_from(huge.len()).unwrap().to_be_bytes());
            record.extend(&huge);
        }
        assert_eq!(text_of(2249, &record), None);
        // Arrays of ordinary values are read whatever their size.
        let small = numeric(0, 0, 0, &[7]);
        let elements: Vec<Option<&[u8]>> = vec![Some(&small[..]); 100_000];
        let text = text_of(1231, &array(1700, &[(100_000, 1)], &elements)).unwrap();
        assert_eq!(text.len(), 2 * 100_000 + 1);
    }

    #[test]
    fn arrays_read_as_postgresql_prints_them() {
        let ints = array(
            23,
            &[(3, 1)],
            &[
                Some(&1i32.to_be_bytes()),
                None,
                Some(&(-3i32).to_be_bytes()),
            ],
        );
        assert_eq!(text_of(1007, &ints).as_deref(), Some("{1,NULL,-3}"));
        let texts = array(
            25,
            &[(2, 2), (2, 1)],
            &[Some(b"a b"), Some(b""), Some(b"say \"hi\""), Some(b"null")],
        );
        assert_eq!(
            text_of(1009, &texts).as_deref(),
            Some(r#"[2:3][1:2]={{"a b",""},{"say \"hi\"","null"}}"#)
        );
        assert_eq!(text_of(1009, &array(25, &[], &[])).as_deref(), Some("{}"));
        let numerics = array(1700, &[(1, 1)], &[Some(&numeric(0, 0, 1, &[7, 5000]))]);
        assert_eq!(text_of(1231, &numerics).as_deref(), Some("{7.5}"));
        // The element type must be the array type's; counts must fit the bytes.
        assert_eq!(text_of(1009, &ints), None);
        let mut lying = array(23, &[(1000, 1)], &[Some(&1i32.to_be_bytes())]);
        assert_eq!(text_of(1007, &lying), None);
        lying.truncate(lying.len() - 1);
        assert_eq!(text_of(1007, &lying), None);
        // An element of a type not read here makes the array unread.
        assert_eq!(
            text_of(1182, &array(1082, &[(1, 1)], &[Some(&[0; 4])])),
            None
        );
    }

    #[test]
    fn records_read_as_postgresql_prints_them() {
        let mut v = 3i32.to_be_bytes().to_vec();
        for (oid, value) in [
            (23, Some(&7i32.to_be_bytes()[..])),
            (25, Some(b"a,b")),
            (25, None),
        ] {
            v.extend_from_slice(&i32::to_be_bytes(oid));
            match value {
                Some(b) => {
                    v.extend_from_slice(&i32::try_from(b.len()).unwrap().to_be_bytes());
                    v.extend_from_slice(b);
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        assert_eq!(text_of(2249, &v).as_deref(), Some(r#"(7,"a,b",)"#));
        // A field of a type not read here.
        let mut unknown = 1i32.to_be_bytes().to_vec();
        unknown.extend_from_slice(&1082i32.to_be_bytes());
        unknown.extend_from_slice(&4i32.to_be_bytes());
        unknown.extend_from_slice(&[0; 4]);
        assert_eq!(text_of(2249, &unknown), None);
    }

    /// A length-prefixed field or bound.
    fn prefixed(v: &mut Vec<u8>, value: &[u8]) {
        v.extend_from_slice(&i32::try_from(value.len()).unwrap().to_be_bytes());
        v.extend_from_slice(value);
    }

    #[test]
    fn ranges_read_as_postgresql_prints_them() {
        let range = |flags: u8, bounds: &[&[u8]]| {
            let mut v = vec![flags];
            for b in bounds {
                prefixed(&mut v, b);
            }
            v
        };
        let (one, ten) = (1i32.to_be_bytes(), 10i32.to_be_bytes());
        assert_eq!(
            text_of(3904, &range(0x02, &[&one, &ten])).as_deref(),
            Some("[1,10)")
        );
        assert_eq!(text_of(3904, &range(0x01, &[])).as_deref(), Some("empty"));
        assert_eq!(
            text_of(3904, &range(0x08 | 0x04, &[&ten])).as_deref(),
            Some("(,10]")
        );
        assert_eq!(
            text_of(3906, &range(0x02 | 0x10, &[&numeric(0, 0, 1, &[1, 5000])])).as_deref(),
            Some("[1.5,)")
        );
        // A missing or extra bound, a flag never sent.
        assert_eq!(text_of(3904, &range(0x02, &[&one])), None);
        assert_eq!(text_of(3904, &range(0x18, &[&one])), None);
        assert_eq!(text_of(3904, &range(0x20, &[&one, &ten])), None);
        // Timestamps are not read here.
        assert_eq!(text_of(3908, &range(0x02, &[&[0; 8], &[0; 8]])), None);
        // Multiranges: ranges in braces, unquoted.
        let mut multi = 2i32.to_be_bytes().to_vec();
        prefixed(&mut multi, &range(0x02, &[&one, &ten]));
        prefixed(&mut multi, &range(0x08 | 0x10, &[]));
        assert_eq!(text_of(4451, &multi).as_deref(), Some("{[1,10),(,)}"));
        assert_eq!(text_of(4451, &0i32.to_be_bytes()).as_deref(), Some("{}"));
        // More ranges than the bytes hold.
        multi[3] = 200;
        assert_eq!(text_of(4451, &multi), None);
    }

    #[test]
    fn the_databases_types_read_by_their_forms() {
        use super::{Form, text_of_with};
        const MOOD: i32 = 16_400;
        const MOODS: i32 = 16_401;
        const PAIR: i32 = 16_402;
        const EMAIL: i32 = 16_403;
        const WORDS: i32 = 16_404;
        let forms = |oid: i32| match oid {
            MOOD => Some(Form::Text),
            MOODS => Some(Form::Array(MOOD)),
            PAIR => Some(Form::Record),
            EMAIL => Some(Form::Domain(25)),
            WORDS => Some(Form::Range(EMAIL)),
            1082 => Some(Form::Opaque),
            _ => None,
        };
        let text = |oid: i32, v: &[u8]| text_of_with(oid, v, &forms);
        assert_eq!(text(MOOD, b"happy").as_deref(), Some("happy"));
        let moods = array(MOOD, &[(2, 1)], &[Some(b"sad"), Some(b"very happy")]);
        assert_eq!(
            text(MOODS, &moods).as_deref(),
            Some(r#"{sad,"very happy"}"#)
        );
        // A composite with a domain over text, an enum and a date.
        let mut pair = 3i32.to_be_bytes().to_vec();
        for (oid, value) in [(EMAIL, &b"a@b.example"[..]), (MOOD, b"ok"), (1082, &[0; 4])] {
            pair.extend_from_slice(&oid.to_be_bytes());
            prefixed(&mut pair, value);
        }
        assert_eq!(text(PAIR, &pair).as_deref(), Some("(a@b.example,ok,?)"));
        let mut words = vec![0x02 | 0x04];
        prefixed(&mut words, b"a b");
        prefixed(&mut words, b"[z]");
        assert_eq!(text(WORDS, &words).as_deref(), Some(r#"["a b","[z]"]"#));
        // Without the forms, none is read; an array's element must be its
        // type's, and an enum's label must be UTF-8.
        assert_eq!(text_of(MOOD, b"happy"), None);
        assert_eq!(text_of(PAIR, &pair), None);
        assert_eq!(text(MOODS, &array(25, &[(1, 1)], &[Some(b"x")])), None);
        assert_eq!(text(MOOD, &[0xff]), None);
        // A domain over itself (no catalog has one) ends at the bound.
        let circular = |oid: i32| (oid == MOOD).then_some(Form::Domain(MOOD));
        assert_eq!(text_of_with(MOOD, b"x", &circular), None);
    }

    #[test]
    fn nesting_is_bounded() {
        // Records of records: the empty record, wrapped `levels` times.
        let nested = |levels: usize| {
            let mut v = 0i32.to_be_bytes().to_vec();
            for _ in 0..levels {
                let inner = v;
                v = 1i32.to_be_bytes().to_vec();
                v.extend_from_slice(&2249i32.to_be_bytes());
                v.extend_from_slice(&i32::try_from(inner.len()).unwrap().to_be_bytes());
                v.extend_from_slice(&inner);
            }
            v
        };
        assert_eq!(text_of(2249, &nested(1)).as_deref(), Some(r#"("()")"#));
        assert!(text_of(2249, &nested(super::MAX_DEPTH)).is_some());
        assert_eq!(text_of(2249, &nested(super::MAX_DEPTH + 1)), None);
    }
}
