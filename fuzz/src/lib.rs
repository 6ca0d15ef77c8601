//! Fuzz targets: one function per decoder that reads bytes an attacker (or
//! a damaged disk) controls. Each takes arbitrary bytes and must return
//! without panicking, hanging or allocating without bound; where a decoder
//! promises more (a frame never longer than its limit, a spool that
//! recovers into a usable state, a token that verifies only as signed),
//! the target asserts it.
//!
//! Two harnesses run them:
//! - `make fuzz`: libFuzzer, coverage-guided (`fuzz/libfuzzer`, one binary
//!   per target, via cargo-fuzz);
//! - `make test`: `tests/seeds.rs`, every target over hand-written seeds
//!   and a fixed number of deterministic mutations of them, so a decoder
//!   change that panics on nearby input fails the ordinary suite.
//!
//! What is out of scope: decoders owned by other projects (russh's SSH,
//! hyper's HTTP, prost's protobuf, rustls), which their projects fuzz.

use std::{
    future::Future,
    pin::pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
};

use sluice_pgwire::{FrameReader, messages, startup};
use sluice_policy::{Detector, MaskStrategy};

/// A fuzz target: takes any bytes.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of the libFuzzer binaries).
pub const TARGETS: &[(&str, Target)] = &[
    ("pg_startup", pg_startup),
    ("pg_frontend", pg_frontend),
    ("pg_backend", pg_backend),
    ("scram", scram),
    ("sql", sql),
    ("policy_document", policy_document),
    ("compiled_policy", compiled_policy),
    ("mask", mask),
    ("spool", spool),
    ("token", token),
];

/// Largest message the frame targets accept (the agent's default is 16 MiB;
/// a small limit reaches the limit checks with small inputs).
const MAX_MESSAGE: u32 = 64 * 1024;

/// Runs a future that reads only from memory: it can never wait.
fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

/// What a client sends before authenticating: the start-up packet (or
/// SSLRequest, GSSENCRequest, CancelRequest), then the password message.
pub fn pg_startup(data: &[u8]) {
    let mut r = data;
    if let Ok(startup::Startup::Params { params, .. }) = ready(startup::read_startup(&mut r)) {
        let bytes: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            bytes <= startup::MAX_STARTUP as usize,
            "parameters larger than the packet"
        );
    }
    if let Ok((tag, body)) = ready(startup::read_message(&mut r, MAX_MESSAGE)) {
        assert!(body.len() <= MAX_MESSAGE as usize);
        if tag == b'p' {
            let _ = messages::parse_password(&body);
        }
    }
}

/// Splits `data` into frames as a session does, handing each to `each`;
/// stops at the first bad length, as a session ends there.
fn frames(data: &[u8], mut each: impl FnMut(u8, &[u8])) {
    let mut reader = FrameReader::new(MAX_MESSAGE);
    // In two reads, so frames split across reads are reassembled too.
    let (first, second) = data.split_at(data.len() / 2);
    for chunk in [first, second] {
        reader.buffer().extend_from_slice(chunk);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.raw.len() <= MAX_MESSAGE as usize + 1);
                    assert_eq!(frame.body().len() + 5, frame.raw.len());
                    each(frame.tag, frame.body());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Messages from a client after authentication, as the agent decodes them
/// to judge them.
pub fn pg_frontend(data: &[u8]) {
    frames(data, |tag, body| match tag {
        b'Q' => {
            let _ = messages::parse_query(body);
        }
        b'P' => {
            if let Ok(p) = messages::parse_parse(body) {
                assert!(p.query.len() <= body.len());
            }
        }
        b'B' => {
            if let Ok(bind) = messages::parse_bind(body) {
                let mut fed = 0;
                bind.feed_params_exact(|b| fed += b.len());
                let types: Vec<i32> = (0..bind.params.len())
                    .map(|i| if i % 2 == 0 { 23 } else { 25 })
                    .collect();
                let shown = bind.params_for_audit(&types, &database_types);
                assert_eq!(shown.len(), bind.params.len());
                for i in 0..bind.params.len() + 1 {
                    let _ = bind.param_is_binary(i);
                }
            }
        }
        b'E' => {
            let _ = messages::parse_execute(body);
        }
        b'C' | b'D' => {
            let _ = messages::parse_target(body);
        }
        b'p' => {
            let _ = messages::parse_password(body);
        }
        _ => {}
    });
}

/// Messages from the target, as the agent decodes them to authenticate,
/// relay, count rows and mask results.
/// Forms of made-up database types for [`pg_backend`].
fn database_types(oid: i32) -> Option<sluice_pgwire::binary::Form> {
    use sluice_pgwire::binary::Form;
    Some(match oid {
        16_400 => Form::Text,
        16_401 => Form::Record,
        16_402 => Form::Array(16_400),
        16_403 => Form::Domain(16_402),
        16_404 => Form::Range(16_403),
        16_406 => Form::Multirange(16_404),
        16_405 => Form::Domain(16_405),
        1082 | 1114 => Form::Opaque,
        _ => return None,
    })
}

pub fn pg_backend(data: &[u8]) {
    frames(data, |tag, body| match tag {
        b'R' => {
            let _ = messages::parse_auth(body);
        }
        b'S' => {
            let _ = messages::parse_parameter_status(body);
        }
        b'K' => {
            let _ = messages::parse_backend_key_data(body);
        }
        b'T' => {
            let _ = messages::parse_row_description(body);
            let _ = messages::parse_row_columns(body);
        }
        b'D' => {
            if let Ok(values) = messages::parse_data_row(body) {
                // Every type the agent renders, and whatever else follows.
                for (i, v) in values.iter().enumerate() {
                    if let Some(v) = v {
                        let oid = [
                            16, 17, 20, 21, 23, 25, 700, 701, 1082, 1114, 1700, 2950, 1007, 1009,
                            1231, 2249, 2287, 3904, 3905, 3906, 16_400, 16_401, 16_402, 16_403,
                            16_404, 16_405, 16_406, 4451, 1083, 1184, 1185, 1186, 1187, 869, 650,
                            1041, 3910,
                        ]
                        .get(i)
                        .copied()
                        .unwrap_or(i as i32);
                        let _ = messages::binary_as_text(oid, v, &|_| None);
                        // The database's own types, as the masker and the
                        // audit trail read them (a domain over itself
                        // included).
                        let _ = messages::binary_as_text(oid, v, &database_types);
                    }
                }
            }
        }
        b'E' | b'N' => {
            let _ = messages::parse_fields(body);
        }
        b'C' => {
            let _ = messages::command_rows(body);
        }
        b'Z' => {
            let _ = messages::ready_status(body);
        }
        b't' => {
            if let Ok(types) = messages::parse_parameter_description(body) {
                assert!(types.len() * 4 < body.len());
            }
        }
        _ => {}
    });
}

/// The target's SCRAM-SHA-256 messages: server-first (its nonce must extend
/// the client's, so the input follows the client nonce), then
/// server-final after a newline.
pub fn scram(data: &[u8]) {
    let Ok(mut client) = sluice_pgwire::auth::ScramClient::new(b"upstream-secret") else {
        return;
    };
    let first = String::from_utf8_lossy(&client.client_first()).into_owned();
    let nonce = first.rsplit("r=").next().unwrap_or_default().to_owned();
    let text = String::from_utf8_lossy(data);
    let (server_first, server_final) = text.split_once('\n').unwrap_or((&text, ""));
    // An iteration count the client accepts costs that many HMACs; keep
    // inputs fast rather than time one key derivation.
    if server_first
        .split(',')
        .filter_map(|f| f.strip_prefix("i="))
        .any(|i| i.trim().parse::<u64>().map_or(true, |n| n > 4096))
    {
        return;
    }
    let server_first = format!("r={nonce}{server_first}");
    if client.client_final(server_first.as_bytes()).is_ok() {
        // Forged: no server-final proves knowledge of the password here.
        assert!(
            client.verify_server_final(server_final.as_bytes()).is_err(),
            "a server-final signature was accepted without the password"
        );
    }
}

/// SQL text, classified with PostgreSQL's parser as the agent judges it.
pub fn sql(data: &[u8]) {
    // Lossy, so most inputs reach the parser (clients' text is UTF-8: the
    // agent refuses anything else before parsing).
    let text = String::from_utf8_lossy(data);
    let _ = sluice_policy::sql::classify(&text);
    let _ = sluice_policy::sql::normalize(&text);
}

/// A policy document as the API receives it (YAML or JSON).
pub fn policy_document(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sluice_policy::parse::parse_document(text);
    }
}

/// A compiled policy as an agent reads it from a snapshot.
pub fn compiled_policy(data: &[u8]) {
    let _ = sluice_policy::CompiledPolicy::from_json_bytes(data);
}

/// A result value, scanned by every detector and masked every way.
pub fn mask(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let found = sluice_policy::find(&Detector::ALL, &text);
    for m in &found {
        assert!(
            text.get(m.start..m.end).is_some(),
            "a match outside the value or inside a character"
        );
    }
    for strategy in [
        MaskStrategy::Redact,
        MaskStrategy::Partial,
        MaskStrategy::Hash,
        MaskStrategy::Null,
    ] {
        let _ = sluice_policy::mask_text(&Detector::ALL, strategy, &text, b"fuzz-key");
    }
}

/// A spool directory after a crash or damage, laid out by [`spool_input`]
/// (see [`open_spool`]):
/// an `acked` file (if any) and the first segment file. Opening it either
/// refuses with an error or recovers into a spool that reads what it holds
/// and takes new records, having kept whatever it cut off.
pub fn spool(data: &[u8]) {
    let Some((_dir, mut spool)) = open_spool(data) else {
        return;
    };
    for kept in spool.set_aside() {
        let len = std::fs::metadata(&kept.kept_at).map(|m| m.len()).ok();
        assert_eq!(len, Some(kept.bytes), "what recovery cut off is kept whole");
    }
    let _ = spool.read_after(spool.acked_seq(), 1000, 1024 * 1024);
    let seq = spool
        .append(b"after recovery")
        .expect("a recovered spool takes new records");
    let read = spool
        .read_after(seq - 1, 1, 1024)
        .expect("a recovered spool reads what it took");
    assert_eq!(read, vec![(seq, b"after recovery".to_vec())]);
}

/// Lays out a [`spool`] input in a new directory and opens it; `None` when
/// the spool refuses it (or the directory cannot be written).
pub fn open_spool(data: &[u8]) -> Option<(tempfile::TempDir, sluice_spool::Spool)> {
    // The first byte is the `acked` file's length (0: no such file).
    let (&n, rest) = data.split_first()?;
    let (acked, segment) = rest.split_at(usize::from(n).min(rest.len()));
    let dir = tempfile::tempdir().ok()?;
    std::fs::write(dir.path().join("00000000000000000001.seg"), segment).ok()?;
    if n > 0 {
        std::fs::write(dir.path().join("acked"), acked).ok()?;
    }
    let config = sluice_spool::SpoolConfig {
        max_bytes: 1024 * 1024,
        segment_bytes: 4096,
        max_record_bytes: 64 * 1024,
        sync: sluice_spool::SyncMode::Deferred,
        tail_bytes: 0,
    };
    let spool = sluice_spool::Spool::open(dir.path(), config).ok()?;
    Some((dir, spool))
}

struct Tokens {
    verifier: sluice_identity::Verifier,
    valid: String,
}

/// A verifier trusting one Ed25519 issuer, and a token it signed.
fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let (key, _) =
            sluice_identity::IssuerKey::generate("fuzz-1").expect("an Ed25519 key is generated");
        let jwks = sluice_identity::jwks(&[&key]).to_string();
        let mut issuer = sluice_identity::TrustedIssuer::new(
            "https://fuzz.invalid",
            vec!["sluice".into()],
            jwks,
        );
        issuer.algorithms = vec!["EdDSA".into()];
        let verifier = sluice_identity::Verifier::new(&[issuer]).expect("the fuzz issuer is valid");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = sluice_identity::TokenClaims {
            iss: "https://fuzz.invalid".into(),
            sub: "fuzz-subject".into(),
            aud: vec!["sluice".into()],
            exp: now + 24 * 3600,
            iat: now,
            nbf: now,
            jti: "fuzz-token".into(),
            groups: vec!["devs".into()],
            roles: Vec::new(),
            sluice_kind: None,
        };
        let valid = key.sign(&claims).expect("the fuzz token is signed");
        Tokens { verifier, valid }
    })
}

/// A client's token (its PostgreSQL password): verifies only as the
/// issuer signed it.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(subject) = verified_subject(text) {
        assert_eq!(
            subject, "fuzz-subject",
            "a token the issuer never signed was accepted"
        );
    }
}

/// The subject of `text` if the fuzz issuer's verifier accepts it.
pub fn verified_subject(text: &str) -> Option<String> {
    tokens().verifier.verify_now(text).ok().map(|i| i.subject)
}

/// An input for [`spool`]: a spool directory holding `segment` and, if
/// given, an `acked` file holding `acked`.
pub fn spool_input(segment: &[u8], acked: Option<&[u8]>) -> Vec<u8> {
    let acked = acked.unwrap_or_default();
    let n = u8::try_from(acked.len()).expect("an acked file of at most 255 bytes");
    [&[n], acked, segment].concat()
}

/// The signed token [`token`] accepts, for seeds.
pub fn valid_token() -> &'static str {
    &tokens().valid
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&u32::try_from(body.len() + 4).expect("seed").to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = u32::try_from(body.len() + 4)
        .expect("seed")
        .to_be_bytes()
        .to_vec();
    v.extend(body);
    v
}

/// Hand-written inputs for `target`, valid or nearly so: where mutation and
/// coverage-guided search start.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let bind = {
        let mut b = b"portal\0stmt\0".to_vec();
        b.extend_from_slice(&[0, 2, 0, 0, 0, 1, 0, 2]);
        b.extend_from_slice(&[0, 0, 0, 2, b'4', b'2']);
        b.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        b.extend_from_slice(&[0, 1, 0, 0]);
        b
    };
    match target {
        "pg_startup" => vec![
            [
                startup(&[("user", "alice"), ("database", "app")]),
                frame(b'p', b"eyJhbGciOi.token.sig\0"),
            ]
            .concat(),
            vec![0, 0, 0, 8, 4, 210, 22, 47],
            vec![0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2],
            vec![0, 0, 0, 8, 4, 210, 22, 48],
        ],
        "pg_frontend" => vec![
            frame(b'Q', b"SELECT 1; DROP TABLE t\0"),
            [
                frame(b'P', b"stmt\0SELECT $1::int, $2\0\0\x02\0\0\0\x17\0\0\0\x19"),
                frame(b'B', &bind),
                frame(b'D', b"Pportal\0"),
                frame(b'E', b"portal\0\0\0\0\x0a"),
                frame(b'C', b"Sstmt\0"),
                frame(b'S', b""),
            ]
            .concat(),
            frame(b'p', b"password\0"),
        ],
        "pg_backend" => {
            let mut row = vec![0, 3];
            row.extend_from_slice(&[0, 0, 0, 2, b'4', b'2']);
            row.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
            row.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 42]);
            let mut desc = vec![0, 1];
            desc.extend_from_slice(b"email\0");
            desc.extend_from_slice(&[0, 0, 0x40, 0, 0, 2, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
            vec![
                [
                    frame(b'R', &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', b'-', b'S', b'H', b'A', b'-', b'2', b'5', b'6', 0, 0]),
                    frame(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]),
                    frame(b'R', &[0, 0, 0, 0]),
                    frame(b'S', b"server_version\x0015.4\0"),
                    frame(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
                    frame(b'Z', b"I"),
                ]
                .concat(),
                [
                    frame(b'T', &desc),
                    frame(b'D', &row),
                    frame(b'C', b"SELECT 1\0"),
                    frame(b'E', b"SERROR\0C42501\0Mdenied\0\0"),
                    frame(b'N', b"SNOTICE\0Mhello\0\0"),
                ]
                .concat(),
            ]
        }
        "scram" => vec![
            b"3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096\nv=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            b",s=c2FsdA==,i=1\n".to_vec(),
        ],
        "sql" => vec![
            b"SELECT id, email FROM customers WHERE id = $1".to_vec(),
            b"DELETE FROM t; DROP TABLE \"T\"; /* c */ TRUNCATE u".to_vec(),
            b"DO $x$ BEGIN EXECUTE 'DROP TABLE t'; END $x$".to_vec(),
            b"COPY t TO PROGRAM 'id'; SELECT pg_read_file('/etc/passwd')".to_vec(),
            b"WITH d AS (DELETE FROM t RETURNING *) SELECT U&\"d\\0061ta\" FROM d".to_vec(),
            b"EXPLAIN ANALYZE UPDATE t SET a = 1; SET ROLE admin; RESET ALL".to_vec(),
            b"SELECT ((((((((((1))))))))))".to_vec(),
        ],
        "policy_document" => vec![
            include_bytes!("../../examples/demo-policy.yaml").to_vec(),
            b"name: app\nrules:\n  - allow: { sql: { statements: [read] } }\n    name: read\n  - deny: { sql: { tables: [\"secrets.*\"] } }\n    reason: no\n".to_vec(),
            br#"{"name":"x","grants":[{"groups":["devs"],"resources":["app"]}],"rules":[{"mask":{"columns":["*.email"],"strategy":"partial"}}]}"#.to_vec(),
        ],
        "compiled_policy" => {
            // What an agent receives: the demo policy, compiled.
            let text = include_str!("../../examples/demo-policy.yaml");
            let doc = sluice_policy::parse::parse_document(text).expect("seed");
            let compiled = sluice_policy::compile_all(&doc, &[]);
            vec![
                compiled.to_json_bytes().expect("seed"),
                sluice_policy::CompiledPolicy::deny_all().to_json_bytes().expect("seed"),
            ]
        }
        "mask" => vec![
            b"alice@example.com 4111 1111 1111 1111 078-05-1120".to_vec(),
            b"GB82 WEST 1234 5698 7654 32 +1 (555) 010-0199 AKIAIOSFODNN7EXAMPLE".to_vec(),
            b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig -----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----".to_vec(),
            "caf\u{e9} \u{1f600}@x.io".as_bytes().to_vec(),
        ],
        "spool" => {
            // A real segment: written by a spool, then read as bytes.
            let dir = tempfile::tempdir().expect("seed");
            let mut spool = sluice_spool::Spool::open(dir.path(), sluice_spool::SpoolConfig::default()).expect("seed");
            spool.append(b"first record").expect("seed");
            spool.append_batch(&[b"second", b"third record, longer"]).expect("seed");
            drop(spool);
            let segment = std::fs::read(dir.path().join("00000000000000000001.seg")).expect("seed");
            vec![
                spool_input(&segment, None),
                spool_input(&segment, Some(b"2\n")),
                spool_input(&segment[..segment.len() - 3], Some(b"1\n")),
            ]
        }
        "token" => vec![valid_token().as_bytes().to_vec()],
        other => panic!("no seeds for target {other}"),
    }
}
