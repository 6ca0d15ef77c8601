//! PostgreSQL's text form of binary-format values of its own types.
//!
//! Drivers such as asyncpg ask for every result column in binary, and bind
//! parameters in binary. The agent reads such values as PostgreSQL would
//! print them: to run masking detectors over them as over text results, and
//! to record parameters in the audit trail. [`text_of`] knows the built-in
//! scalar types drivers use most (booleans, integers, floats, `numeric`,
//! text types, `json`/`jsonb`, `uuid`), arrays of those, and anonymous
//! records; for anything else it returns `None`, and the caller decides
//! (the masker treats such a value as possibly holding text). Floats are
//! written in Rust's shortest form, which has the same digits as
//! PostgreSQL's but no exponent (`1e+20` reads `100000000000000000000`).
//!
//! The input comes from the database, but nothing here trusts it: every
//! length is checked, element counts are bounded by the bytes present,
//! and nesting is bounded.

use std::fmt::Write as _;

/// Deepest nesting read (records within arrays within records...).
const MAX_DEPTH: usize = 8;

/// Text types: their binary form is the text itself.
const TEXT_TYPES: [i32; 7] = [25, 1043, 1042, 19, 705, 114, 142];

/// The element type of each built-in array type read here.
fn array_element(oid: i32) -> Option<i32> {
    Some(match oid {
        1000 => 16,   // bool
        1005 => 21,   // int2
        1007 => 23,   // int4
        1016 => 20,   // int8
        1028 => 26,   // oid
        1021 => 700,  // float4
        1022 => 701,  // float8
        1231 => 1700, // numeric
        1009 => 25,   // text
        1015 => 1043, // varchar
        1014 => 1042, // bpchar
        1003 => 19,   // name
        199 => 114,   // json
        143 => 142,   // xml
        3807 => 3802, // jsonb
        2951 => 2950, // uuid
        2287 => 2249, // record
        _ => return None,
    })
}

/// PostgreSQL's text form of `v`, a binary-format value of type `oid`, or
/// `None` for a type not read here or bytes that are not a valid value.
pub fn text_of(oid: i32, v: &[u8]) -> Option<String> {
    let mut out = String::new();
    write_value(oid, v, 0, &mut out)?;
    Some(out)
}

fn write_value(oid: i32, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
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
        (2249, _) => record(v, depth, out)?,
        (t, _) if TEXT_TYPES.contains(&t) => out.push_str(std::str::from_utf8(v).ok()?),
        (t, _) => array(array_element(t)?, v, depth, out)?,
    }
    Some(())
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
/// sign, display scale, then the digits; printed as `get_str_from_var`.
fn numeric(v: &[u8], out: &mut String) -> Option<()> {
    let mut r = Reader(v);
    let ndigits = usize::from(r.u16()?);
    let weight = i32::from(r.u16()?.cast_signed());
    let sign = r.u16()?;
    let dscale = r.u16()?;
    let digits: Vec<u16> = (0..ndigits).map(|_| r.u16()).collect::<Option<_>>()?;
    r.done()?;
    if ndigits > 0x7fff || dscale > 0x3fff || digits.iter().any(|d| *d > 9999) {
        return None;
    }
    match sign {
        0x0000 => {}
        0x4000 => out.push('-'),
        0xc000 => return (ndigits == 0).then(|| out.push_str("NaN")),
        0xd000 => return (ndigits == 0).then(|| out.push_str("Infinity")),
        0xf000 => return (ndigits == 0).then(|| out.push_str("-Infinity")),
        _ => return None,
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

/// `array_send`: dimensions, a has-nulls flag, the element type, each
/// dimension's length and lower bound, then the elements; printed as
/// `array_out` (bounds shown only when one is not 1).
fn array(element: i32, v: &[u8], depth: usize, out: &mut String) -> Option<()> {
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
    array_level(&lens, element, &mut r, depth, out)?;
    r.done()
}

fn array_level(
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
                    write_value(element, bytes, depth + 1, &mut text)?;
                    quote_array_element(&text, out);
                }
            }
        } else {
            array_level(inner, element, r, depth, out)?;
        }
    }
    out.push('}');
    Some(())
}

/// `array_out`'s quoting: empty, `NULL`, or holding a delimiter, brace,
/// quote, backslash or white space; quotes and backslashes are escaped.
fn quote_array_element(text: &str, out: &mut String) {
    let needs = text.is_empty()
        || text.eq_ignore_ascii_case("null")
        || text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '{' | '}' | ',') || is_space(c));
    push_quoted(text, needs, Some('\\'), out);
}

/// White space as PostgreSQL's `isspace` sees it.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
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

/// `record_send`: the field count, then each field's type and value;
/// printed as `record_out` (a NULL field is empty).
fn record(v: &[u8], depth: usize, out: &mut String) -> Option<()> {
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
            write_value(oid, bytes, depth + 1, &mut text)?;
            quote_record_field(&text, out);
        }
    }
    out.push(')');
    r.done()
}

/// `record_out`'s quoting: empty, or holding a parenthesis, comma, quote,
/// backslash or white space; quotes and backslashes are doubled.
fn quote_record_field(text: &str, out: &mut String) {
    let needs = text.is_empty()
        || text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || is_space(c));
    push_quoted(text, needs, None, out);
}

#[cfg(test)]
mod tests {
    use super::text_of;

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
