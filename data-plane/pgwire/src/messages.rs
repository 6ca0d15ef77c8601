//! Builders for the messages the agent writes and parsers for the ones it
//! reads. Parsers borrow from the frame body and never panic.

use bytes::{BufMut as _, BytesMut};

use crate::{Frame, ProtocolError};

/// A bounds-checked reader over a message body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, ProtocolError> {
        let rest = self
            .buf
            .get(self.pos..)
            .ok_or(ProtocolError::Malformed(what))?;
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(ProtocolError::Malformed(what))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| ProtocolError::NotUtf8(what))?;
        self.pos += end + 1;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ProtocolError::Malformed(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        let b = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ProtocolError::Malformed(what))?;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or(ProtocolError::Malformed(what))?;
        self.pos = end;
        Ok(b)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early and let text forge fields.
    for b in s.bytes().filter(|b| *b != 0) {
        buf.put_u8(b);
    }
    buf.put_u8(0);
}

// ------------------------------------------------------------ backend side

/// Fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notice {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Notice {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            ..Self::default()
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self {
            severity: "FATAL".into(),
            code: code.into(),
            message: message.into(),
            ..Self::default()
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn encode(&self, tag: u8) -> Frame {
        let mut body = BytesMut::new();
        for (field, value) in [
            (b'S', &self.severity),
            (b'V', &self.severity),
            (b'C', &self.code),
            (b'M', &self.message),
        ] {
            body.put_u8(field);
            put_cstr(&mut body, value);
        }
        if let Some(d) = &self.detail {
            body.put_u8(b'D');
            put_cstr(&mut body, d);
        }
        if let Some(h) = &self.hint {
            body.put_u8(b'H');
            put_cstr(&mut body, h);
        }
        body.put_u8(0);
        Frame::new(tag, &body)
    }

    /// As an ErrorResponse ('E').
    pub fn to_error(&self) -> Frame {
        self.encode(b'E')
    }

    /// As a NoticeResponse ('N').
    pub fn to_notice(&self) -> Frame {
        self.encode(b'N')
    }
}

/// All fields of an ErrorResponse/NoticeResponse body, in order.
pub fn parse_fields(body: &[u8]) -> Result<Vec<(u8, String)>, ProtocolError> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    loop {
        let code = r.u8("error fields")?;
        if code == 0 {
            return Ok(out);
        }
        let rest = r.rest();
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(ProtocolError::Malformed("error fields"))?;
        out.push((code, String::from_utf8_lossy(&rest[..len]).into_owned()));
        r.bytes(len + 1, "error fields")?;
    }
}

/// Re-encodes error/notice fields (after scrubbing).
pub fn encode_fields(tag: u8, fields: &[(u8, String)]) -> Frame {
    let mut body = BytesMut::new();
    for (code, value) in fields {
        body.put_u8(*code);
        put_cstr(&mut body, value);
    }
    body.put_u8(0);
    Frame::new(tag, &body)
}

pub fn ready_for_query(status: u8) -> Frame {
    Frame::new(b'Z', &[status])
}

pub fn auth_ok() -> Frame {
    Frame::new(b'R', &0i32.to_be_bytes())
}

pub fn auth_cleartext() -> Frame {
    Frame::new(b'R', &3i32.to_be_bytes())
}

/// NegotiateProtocolVersion ('v'): the newest minor version we speak and
/// the protocol options (`_pq_.*`) we did not recognise.
pub fn negotiate_protocol_version(newest_minor: u32, unrecognised: &[&str]) -> Frame {
    let mut body = BytesMut::new();
    body.put_u32(newest_minor);
    body.put_u32(u32::try_from(unrecognised.len()).unwrap_or(u32::MAX));
    for o in unrecognised {
        put_cstr(&mut body, o);
    }
    Frame::new(b'v', &body)
}

pub fn parameter_status(name: &str, value: &str) -> Frame {
    let mut body = BytesMut::new();
    put_cstr(&mut body, name);
    put_cstr(&mut body, value);
    Frame::new(b'S', &body)
}

pub fn backend_key_data(pid: u32, key: u32) -> Frame {
    let mut body = BytesMut::new();
    body.put_u32(pid);
    body.put_u32(key);
    Frame::new(b'K', &body)
}

pub fn command_complete(tag: &str) -> Frame {
    let mut body = BytesMut::new();
    put_cstr(&mut body, tag);
    Frame::new(b'C', &body)
}

/// Rows affected or returned, from a CommandComplete tag (`SELECT 5`,
/// `INSERT 0 3`, `UPDATE 2`); `None` for tags without a count.
pub fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(body.split(|b| *b == 0).next()?).ok()?;
    tag.rsplit(' ').next()?.parse().ok()
}

/// The status byte of a ReadyForQuery body.
pub fn ready_status(body: &[u8]) -> Option<u8> {
    body.first().copied()
}

/// An authentication request from the server ('R').
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a str> },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Other(i32),
}

pub fn parse_auth(body: &[u8]) -> Result<AuthRequest<'_>, ProtocolError> {
    let mut r = Reader::new(body);
    Ok(match r.i32("authentication")? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.bytes(4, "md5 salt")?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr("SASL mechanisms")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        other => AuthRequest::Other(other),
    })
}

pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let mut r = Reader::new(body);
    Ok((r.cstr("ParameterStatus")?, r.cstr("ParameterStatus")?))
}

pub fn parse_backend_key_data(body: &[u8]) -> Result<(u32, u32), ProtocolError> {
    let mut r = Reader::new(body);
    Ok((
        r.i32("BackendKeyData")? as u32,
        r.i32("BackendKeyData")? as u32,
    ))
}

// ----------------------------------------------------------- frontend side

/// A StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_message(params: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32(crate::startup::PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(&mut body, k);
        put_cstr(&mut body, v);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_u32(u32::try_from(body.len() + 4).unwrap_or(u32::MAX));
    out.put_slice(&body);
    out
}

pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&crate::startup::SSL_REQUEST.to_be_bytes());
    out
}

pub fn cancel_request(pid: u32, key: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16u32.to_be_bytes());
    out[4..8].copy_from_slice(&crate::startup::CANCEL_REQUEST.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..].copy_from_slice(&key.to_be_bytes());
    out
}

/// PasswordMessage with a NUL-terminated password (cleartext or md5 hash).
pub fn password_message(password: &[u8]) -> Frame {
    let mut body = Vec::with_capacity(password.len() + 1);
    body.extend_from_slice(password);
    body.push(0);
    Frame::new(b'p', &body)
}

pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Frame {
    let mut body = BytesMut::new();
    put_cstr(&mut body, mechanism);
    body.put_i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
    body.put_slice(data);
    Frame::new(b'p', &body)
}

pub fn sasl_response(data: &[u8]) -> Frame {
    Frame::new(b'p', data)
}

pub fn terminate() -> Frame {
    Frame::new(b'X', &[])
}

/// Execute ('E') of `portal`, returning at most `max_rows` rows (0: all).
pub fn execute(portal: &str, max_rows: i32) -> Frame {
    let mut body = BytesMut::new();
    put_cstr(&mut body, portal);
    body.put_i32(max_rows);
    Frame::new(b'E', &body)
}

/// Describe ('D') of a portal.
pub fn describe_portal(portal: &str) -> Frame {
    let mut body = BytesMut::new();
    body.put_u8(b'P');
    put_cstr(&mut body, portal);
    Frame::new(b'D', &body)
}

/// A simple Query ('Q').
pub fn query(sql: &str) -> Frame {
    let mut body = BytesMut::new();
    put_cstr(&mut body, sql);
    Frame::new(b'Q', &body)
}

/// Sync ('S').
pub fn sync() -> Frame {
    Frame::new(b'S', &[])
}

/// Flush ('H').
pub fn flush() -> Frame {
    Frame::new(b'H', &[])
}

/// The password of a PasswordMessage body.
pub fn parse_password(body: &[u8]) -> Result<&str, ProtocolError> {
    Reader::new(body).cstr("password")
}

/// The SQL text of a simple Query ('Q').
pub fn parse_query(body: &[u8]) -> Result<&str, ProtocolError> {
    Reader::new(body).cstr("Query")
}

/// Parse ('P').
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a str,
    pub query: &'a str,
    pub param_types: Vec<i32>,
}

pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    let mut r = Reader::new(body);
    let statement = r.cstr("Parse")?;
    let query = r.cstr("Parse")?;
    let n = r.i16("Parse")?;
    let n = usize::try_from(n).map_err(|_| ProtocolError::Malformed("Parse"))?;
    let mut param_types = Vec::with_capacity(n.min(r.rest().len() / 4));
    for _ in 0..n {
        param_types.push(r.i32("Parse")?);
    }
    Ok(Parse {
        statement,
        query,
        param_types,
    })
}

/// Bind ('B').
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    pub param_formats: Vec<i16>,
    /// `None` is SQL NULL.
    pub params: Vec<Option<&'a [u8]>>,
    pub result_formats: Vec<i16>,
}

impl Bind<'_> {
    /// Whether parameter `i` is sent in binary.
    pub fn param_is_binary(&self, i: usize) -> bool {
        match self.param_formats.len() {
            0 => false,
            1 => self.param_formats[0] == 1,
            _ => self.param_formats.get(i).is_some_and(|f| *f == 1),
        }
    }

    /// Feeds `feed` the parameters exactly as sent (format, then NULL or
    /// length and bytes, of each), an unambiguous encoding: two Binds fed
    /// alike run the statement with equal values, which the audit rendering
    /// cannot promise (SQL NULL and the text `NULL` read alike there). In
    /// pieces, so a large value is hashed where it lies, not copied.
    pub fn feed_params_exact(&self, mut feed: impl FnMut(&[u8])) {
        for (i, p) in self.params.iter().enumerate() {
            feed(&[u8::from(self.param_is_binary(i))]);
            match p {
                None => feed(&(-1i64).to_be_bytes()),
                Some(v) => {
                    feed(&i64::try_from(v.len()).unwrap_or(i64::MAX).to_be_bytes());
                    feed(v);
                }
            }
        }
    }

    /// Parameters as text for the audit trail. Binary values of common
    /// types (by the statement's parameter type OIDs from Parse) are
    /// decoded to PostgreSQL's text form; others are hex-encoded.
    pub fn params_for_audit(
        &self,
        types: &[i32],
        forms: &dyn Fn(i32) -> Option<crate::binary::Form>,
    ) -> Vec<String> {
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                None => "NULL".to_owned(),
                Some(v) if !self.param_is_binary(i) => String::from_utf8_lossy(v).into_owned(),
                Some(v) => binary_as_text(types.get(i).copied().unwrap_or(0), v, forms),
            })
            .collect()
    }
}

fn count(r: &mut Reader<'_>, what: &'static str) -> Result<usize, ProtocolError> {
    usize::try_from(r.i16(what)?).map_err(|_| ProtocolError::Malformed(what))
}

pub fn parse_bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("Bind")?;
    let statement = r.cstr("Bind")?;
    let n = count(&mut r, "Bind")?;
    let mut param_formats = Vec::with_capacity(n.min(r.rest().len() / 2));
    for _ in 0..n {
        param_formats.push(r.i16("Bind")?);
    }
    let n = count(&mut r, "Bind")?;
    let mut params = Vec::with_capacity(n.min(r.rest().len() / 4));
    for _ in 0..n {
        let len = r.i32("Bind")?;
        if len == -1 {
            params.push(None);
        } else {
            let len = usize::try_from(len).map_err(|_| ProtocolError::Malformed("Bind"))?;
            params.push(Some(r.bytes(len, "Bind")?));
        }
    }
    let n = count(&mut r, "Bind")?;
    let mut result_formats = Vec::with_capacity(n.min(r.rest().len() / 2));
    for _ in 0..n {
        result_formats.push(r.i16("Bind")?);
    }
    Ok(Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

/// Describe ('D') or Close ('C'): kind `S` (statement) or `P` (portal) and name.
pub fn parse_target(body: &[u8]) -> Result<(u8, &str), ProtocolError> {
    let mut r = Reader::new(body);
    let kind = r.u8("Describe/Close")?;
    if kind != b'S' && kind != b'P' {
        return Err(ProtocolError::Malformed("Describe/Close"));
    }
    Ok((kind, r.cstr("Describe/Close")?))
}

/// Execute ('E'): portal and row limit (0 = all).
pub fn parse_execute(body: &[u8]) -> Result<(&str, i32), ProtocolError> {
    let mut r = Reader::new(body);
    Ok((r.cstr("Execute")?, r.i32("Execute")?))
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowColumn<'a> {
    pub name: &'a str,
    /// OID of the table the column comes from; 0 when it is not a plain
    /// column reference.
    pub table_oid: u32,
    /// Attribute number in that table (0 for a whole-row reference).
    pub attnum: i16,
    pub type_oid: u32,
    pub format: i16,
}

/// The columns of a RowDescription ('T').
pub fn parse_row_columns(body: &[u8]) -> Result<Vec<RowColumn<'_>>, ProtocolError> {
    let mut r = Reader::new(body);
    let n = r.i16("RowDescription column count")?;
    let mut cols = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(body.len() / 19 + 1));
    for _ in 0..n {
        let name = r.cstr("column name")?;
        let table_oid = r.i32("table oid")? as u32;
        let attnum = r.i16("attribute number")?;
        let type_oid = r.i32("type oid")? as u32;
        r.i16("type size")?;
        r.i32("type modifier")?;
        let format = r.i16("format")?;
        cols.push(RowColumn {
            name,
            table_oid,
            attnum,
            type_oid,
            format,
        });
    }
    Ok(cols)
}

/// Column names of a RowDescription ('T').
pub fn parse_row_description(body: &[u8]) -> Result<Vec<&str>, ProtocolError> {
    let mut r = Reader::new(body);
    let n = r.i16("RowDescription column count")?;
    let mut names = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        names.push(r.cstr("column name")?);
        // table oid, attribute number, type oid, type size, type modifier, format
        r.bytes(4 + 2 + 4 + 2 + 4 + 2, "column description")?;
    }
    Ok(names)
}

/// The values of a DataRow ('D'); `None` is SQL NULL.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body);
    let n = r.i16("DataRow column count")?;
    let mut values = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        let len = r.i32("value length")?;
        values.push(match usize::try_from(len) {
            Ok(len) => Some(r.bytes(len, "value")?),
            Err(_) => None,
        });
    }
    Ok(values)
}

/// PostgreSQL's text form of a binary-format value ([`crate::binary`]),
/// reading the types it does not know by `forms` (the database's own, see
/// [`crate::binary::text_of_with`]) and dates, times, intervals and
/// network addresses at any depth ([`crate::binary::textless_form`]), or
/// `\x` and its hex when the type is not one read there. For the audit
/// trail.
pub fn binary_as_text(
    oid: i32,
    v: &[u8],
    forms: &dyn Fn(i32) -> Option<crate::binary::Form>,
) -> String {
    let forms = |oid: i32| crate::binary::textless_form(oid).or_else(|| forms(oid));
    crate::binary::text_of_with(oid, v, &forms).unwrap_or_else(|| format!("\\x{}", hex::encode(v)))
}

/// The parameter type OIDs of a ParameterDescription ('t'), the target's
/// answer to a Describe of a statement.
pub fn parse_parameter_description(body: &[u8]) -> Result<Vec<i32>, ProtocolError> {
    let mut r = Reader::new(body);
    let n = r.i16("ParameterDescription")?;
    let n = usize::try_from(n).map_err(|_| ProtocolError::Malformed("ParameterDescription"))?;
    let mut types = Vec::with_capacity(n.min(r.rest().len() / 4));
    for _ in 0..n {
        types.push(r.i32("ParameterDescription")?);
    }
    if !r.rest().is_empty() {
        return Err(ProtocolError::Malformed("ParameterDescription"));
    }
    Ok(types)
}

#[cfg(test)]
mod binary_tests {
    use super::parse_parameter_description;
    use crate::binary::Form;

    fn binary_as_text(oid: i32, v: &[u8]) -> String {
        super::binary_as_text(oid, v, &|_| None)
    }

    #[test]
    fn the_database_s_own_types_and_dates_read_by_their_forms() {
        let forms = |oid: i32| (oid == 16_400).then_some(Form::Text);
        assert_eq!(super::binary_as_text(16_400, b"happy", &forms), "happy");
        assert_eq!(
            super::binary_as_text(16_401, b"happy", &forms),
            "\\x6861707079"
        );
        // A date at the top and inside a record (the masker's reading
        // leaves them out).
        assert_eq!(binary_as_text(1082, &[0; 4]), "2000-01-01");
        let mut record = 2i32.to_be_bytes().to_vec();
        for (oid, v) in [(25i32, &b"ada"[..]), (1082, &[0, 0, 0x26, 0x60][..])] {
            record.extend(oid.to_be_bytes());
            record.extend(i32::try_from(v.len()).unwrap().to_be_bytes());
            record.extend(v);
        }
        assert_eq!(binary_as_text(2249, &record), "(ada,2026-11-24)");
    }

    #[test]
    fn parameter_descriptions_are_read_whole() {
        let mut body = 2i16.to_be_bytes().to_vec();
        body.extend(23i32.to_be_bytes());
        body.extend(25i32.to_be_bytes());
        assert_eq!(parse_parameter_description(&body), Ok(vec![23, 25]));
        assert_eq!(parse_parameter_description(&0i16.to_be_bytes()), Ok(vec![]));
        // Short, negative count, trailing bytes.
        assert!(parse_parameter_description(&body[..9]).is_err());
        assert!(parse_parameter_description(&(-1i16).to_be_bytes()).is_err());
        body.push(0);
        assert!(parse_parameter_description(&body).is_err());
    }

    #[test]
    fn common_binary_types_read_as_their_text_form() {
        assert_eq!(binary_as_text(23, &12i32.to_be_bytes()), "12");
        assert_eq!(binary_as_text(20, &(-5i64).to_be_bytes()), "-5");
        assert_eq!(binary_as_text(16, &[1]), "t");
        assert_eq!(binary_as_text(25, b"hi"), "hi");
        assert_eq!(binary_as_text(3802, b"\x01{}"), "{}");
        assert_eq!(
            binary_as_text(2950, &[0x12; 16]),
            "12121212-1212-1212-1212-121212121212"
        );
        // Unknown type, or a length that does not fit: hex.
        assert_eq!(binary_as_text(0, &[1, 2]), "\\x0102");
        assert_eq!(binary_as_text(23, &[1, 2]), "\\x0102");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips_and_strips_nuls() {
        let f = Notice::error("42501", "denied\0by policy")
            .hint("ask")
            .to_error();
        assert_eq!(f.tag, b'E');
        let fields = parse_fields(f.body()).unwrap();
        assert!(fields.contains(&(b'C', "42501".into())));
        assert!(fields.contains(&(b'M', "deniedby policy".into())));
        assert!(fields.contains(&(b'H', "ask".into())));
    }

    #[test]
    fn bind_parses_params_and_rejects_truncation() {
        let mut body = BytesMut::new();
        body.put_slice(b"p1\0s1\0");
        body.put_i16(1);
        body.put_i16(0);
        body.put_i16(2);
        body.put_i32(2);
        body.put_slice(b"42");
        body.put_i32(-1);
        body.put_i16(0);
        let b = parse_bind(&body).unwrap();
        assert_eq!(b.portal, "p1");
        assert_eq!(b.statement, "s1");
        assert_eq!(b.params, vec![Some(&b"42"[..]), None]);
        assert_eq!(
            b.params_for_audit(&[], &|_| None),
            vec!["42".to_owned(), "NULL".to_owned()]
        );
        for cut in 0..body.len() {
            assert!(parse_bind(&body[..cut]).is_err(), "cut at {cut}");
        }
        // A huge declared length must fail, not allocate.
        let mut evil = BytesMut::new();
        evil.put_slice(b"\0\0");
        evil.put_i16(0);
        evil.put_i16(1);
        evil.put_i32(i32::MAX);
        assert!(parse_bind(&evil).is_err());
    }

    #[test]
    fn exact_parameters_tell_apart_what_the_audit_rendering_does_not() {
        let bind = |param: Option<&[u8]>, binary: bool| {
            let mut body = BytesMut::new();
            body.put_slice(b"\0\0");
            body.put_i16(1);
            body.put_i16(i16::from(binary));
            body.put_i16(1);
            match param {
                Some(v) => {
                    body.put_i32(i32::try_from(v.len()).unwrap());
                    body.put_slice(v);
                }
                None => body.put_i32(-1),
            }
            body.put_i16(0);
            body
        };
        let exact = |body: &BytesMut| {
            let mut out = Vec::new();
            parse_bind(body)
                .unwrap()
                .feed_params_exact(|p| out.extend_from_slice(p));
            out
        };
        let null = bind(None, false);
        let text_null = bind(Some(b"NULL"), false);
        let binary_null = bind(Some(b"NULL"), true);
        assert_eq!(
            parse_bind(&null).unwrap().params_for_audit(&[], &|_| None),
            parse_bind(&text_null)
                .unwrap()
                .params_for_audit(&[], &|_| None)
        );
        assert_ne!(exact(&null), exact(&text_null));
        assert_ne!(exact(&text_null), exact(&binary_null));
        assert_eq!(exact(&text_null), exact(&bind(Some(b"NULL"), false)));
    }

    #[test]
    fn parse_and_targets() {
        let mut body = BytesMut::new();
        body.put_slice(b"s\0select $1\0");
        body.put_i16(1);
        body.put_i32(23);
        let p = parse_parse(&body).unwrap();
        assert_eq!(
            (p.statement, p.query, p.param_types),
            ("s", "select $1", vec![23])
        );
        assert_eq!(parse_target(b"Sname\0").unwrap(), (b'S', "name"));
        assert!(parse_target(b"Xname\0").is_err());
        assert!(parse_parse(b"s\0select").is_err());
    }

    #[test]
    fn command_tags() {
        assert_eq!(command_rows(b"SELECT 5\0"), Some(5));
        assert_eq!(command_rows(b"INSERT 0 3\0"), Some(3));
        assert_eq!(command_rows(b"BEGIN\0"), None);
    }

    #[test]
    fn auth_requests() {
        assert_eq!(parse_auth(&0i32.to_be_bytes()).unwrap(), AuthRequest::Ok);
        let mut md5 = 5i32.to_be_bytes().to_vec();
        md5.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            parse_auth(&md5).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        let mut sasl = 10i32.to_be_bytes().to_vec();
        sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
        assert_eq!(
            parse_auth(&sasl).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            }
        );
        assert!(parse_auth(&[0, 0]).is_err());
    }
}
