//! The agent's connection to the target database, logged in with the
//! vault credential. The client never sees the credential, and upstream
//! errors are scrubbed of it before anything is relayed.

use std::{sync::Arc, time::Duration};

use sluice_pgwire::{
    FrameReader,
    auth::{SCRAM_SHA_256, ScramClient, md5_password},
    messages::{self, AuthRequest},
};
use sluice_proto as pb;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use super::io::Stream;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the target database: {0}")]
    Connect(String),
    #[error("the target database requires TLS settings this agent cannot honour: {0}")]
    Tls(String),
    #[error(
        "the target database refused the stored credential (ask an admin to check it with `sluice credentials rotate`)"
    )]
    AuthFailed,
    #[error("the target database asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error(
        "the target database asked for {0} password authentication over a connection sluice cannot authenticate; \
         sluice sends a password that way only with tls_mode verify-full (or to a loopback address); \
         use scram-sha-256 on the target or set tls_mode verify-full with tls_ca on the resource"
    )]
    InsecureAuth(&'static str),
    #[error("the target database spoke an unexpected protocol: {0}")]
    Protocol(String),
    /// Refused at start-up for another reason than the credential (its
    /// connection limits, the database missing or not accepting
    /// connections): its message, scrubbed, and SQLSTATE.
    #[error("the target database refused the connection: {0}")]
    Refused(String),
    #[error("the target database did not answer in time")]
    Timeout,
    #[error("the target database refused a catalog query: {0}")]
    Query(String),
}

/// A logged-in upstream session.
pub struct Upstream {
    pub stream: Stream,
    /// Bytes already read past the start-up phase.
    pub reader: FrameReader,
    /// ParameterStatus messages to relay to the client, in order.
    pub parameters: Vec<(String, String)>,
    /// The target's BackendKeyData (never shown to the client).
    pub backend_pid: u32,
    pub backend_key: u32,
    pub tx_status: u8,
    /// Channels of notifications that arrived during a
    /// [`Upstream::simple_query`], oldest first, for
    /// [`Upstream::notification`].
    heard: Vec<String>,
}

/// Start-up parameters a client may pass through to the target. Anything
/// else (notably `options`, which can set any GUC including `role`, and
/// `replication`) is dropped.
pub const PASSTHROUGH_PARAMS: &[&str] = &[
    "application_name",
    "DateStyle",
    "datestyle",
    "TimeZone",
    "timezone",
    "IntervalStyle",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// Of [`PASSTHROUGH_PARAMS`], those that change more than how values are
/// shown (which functions names resolve to, how long statements and idle
/// transactions may hold locks): each passes only if policy allows the
/// `SET` it amounts to, so a start-up packet cannot undo what a denied
/// `SET` would.
pub const JUDGED_PARAMS: &[&str] = &[
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

pub async fn connect(
    resource: &pb::Resource,
    credential: &pb::Credential,
    client_params: &[(String, String)],
    timeout: Duration,
    max_message: u32,
) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(
        timeout,
        connect_inner(resource, credential, client_params, max_message),
    )
    .await
    .map_err(|_| UpstreamError::Timeout)?
}

async fn connect_inner(
    resource: &pb::Resource,
    credential: &pb::Credential,
    client_params: &[(String, String)],
    max_message: u32,
) -> Result<Upstream, UpstreamError> {
    let tcp = TcpStream::connect(&resource.address)
        .await
        .map_err(|e| UpstreamError::Connect(format!("{}: {e}", resource.address)))?;
    let _ = tcp.set_nodelay(true);
    // A cleartext or MD5 exchange gives the password (or a replayable
    // hash) to whoever answers: only to a target whose identity is proven.
    let loopback = tcp.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    let password_safe = resource.tls_mode == "verify-full" || loopback;
    let mut stream = match resource.tls_mode.as_str() {
        "" | "disable" => Stream::Plain(tcp),
        "require" | "verify-full" => negotiate_tls(tcp, resource).await?,
        other => return Err(UpstreamError::Tls(format!("unknown tls_mode `{other}`"))),
    };

    // UTF-8 only: the agent parses statements as UTF-8, and encodings that
    // are not ASCII-safe (SJIS, BIG5, GBK) could hide a quote inside a
    // multi-byte character and split statements differently on the target.
    let mut params: Vec<(&str, &str)> = vec![
        ("user", credential.username.as_str()),
        ("database", resource.database.as_str()),
        ("client_encoding", "UTF8"),
    ];
    for (k, v) in client_params {
        if PASSTHROUGH_PARAMS.contains(&k.as_str()) {
            params.push((k.as_str(), v.as_str()));
        }
    }
    if !params.iter().any(|(k, _)| *k == "application_name") {
        params.push(("application_name", "sluice"));
    }
    stream
        .write_all(&messages::startup_message(&params))
        .await
        .map_err(io)?;

    let mut reader = FrameReader::new(max_message);
    authenticate(&mut stream, &mut reader, credential, password_safe).await?;

    let mut parameters = Vec::new();
    let (mut backend_pid, mut backend_key) = (0, 0);
    loop {
        let frame = next_frame(&mut stream, &mut reader).await?;
        match frame.tag {
            b'S' => {
                let (k, v) = messages::parse_parameter_status(frame.body()).map_err(proto)?;
                parameters.push((k.to_owned(), v.to_owned()));
            }
            b'K' => {
                (backend_pid, backend_key) =
                    messages::parse_backend_key_data(frame.body()).map_err(proto)?
            }
            b'Z' => {
                let tx_status = messages::ready_status(frame.body()).unwrap_or(b'I');
                return Ok(Upstream {
                    stream,
                    reader,
                    parameters,
                    backend_pid,
                    backend_key,
                    tx_status,
                    heard: Vec::new(),
                });
            }
            b'E' => return Err(scrubbed_error(frame.body(), credential)),
            b'N' => {}
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message `{}` during start-up",
                    other as char
                )));
            }
        }
    }
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    resource: &pb::Resource,
) -> Result<Stream, UpstreamError> {
    tcp.write_all(&messages::ssl_request()).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    if answer[0] != b'S' {
        return Err(UpstreamError::Tls(
            "the target does not offer TLS but the resource requires it".into(),
        ));
    }
    let config = if resource.tls_mode == "verify-full" {
        // The certificate must chain to the resource's CA and name the host
        // the agent dials.
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut resource.tls_ca_pem.as_bytes()) {
            let cert =
                cert.map_err(|e| UpstreamError::Tls(format!("tls_ca is not valid PEM: {e}")))?;
            roots.add(cert).map_err(|e| {
                UpstreamError::Tls(format!("tls_ca is not a usable CA certificate: {e}"))
            })?;
        }
        if roots.is_empty() {
            return Err(UpstreamError::Tls(
                "tls_mode verify-full needs tls_ca on the resource".into(),
            ));
        }
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    } else {
        // `require` encrypts without verifying the server (libpq semantics).
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyServer::new()))
            .with_no_client_auth()
    };
    let host = resource
        .address
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&resource.address);
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
    Ok(Stream::ClientTls(Box::new(tls)))
}

async fn authenticate(
    stream: &mut Stream,
    reader: &mut FrameReader,
    credential: &pb::Credential,
    password_safe: bool,
) -> Result<(), UpstreamError> {
    let mut scram: Option<ScramClient> = None;
    loop {
        let frame = next_frame(stream, reader).await?;
        match frame.tag {
            b'R' => {}
            b'E' => return Err(scrubbed_error(frame.body(), credential)),
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message `{}` during authentication",
                    other as char
                )));
            }
        }
        let reply = match messages::parse_auth(frame.body()).map_err(proto)? {
            AuthRequest::Ok => return Ok(()),
            AuthRequest::Cleartext if !password_safe => {
                return Err(UpstreamError::InsecureAuth("cleartext"));
            }
            AuthRequest::Md5 { .. } if !password_safe => {
                return Err(UpstreamError::InsecureAuth("MD5"));
            }
            AuthRequest::Cleartext => messages::password_message(&credential.secret),
            AuthRequest::Md5 { salt } => messages::password_message(
                md5_password(&credential.username, &credential.secret, salt).as_bytes(),
            ),
            AuthRequest::Sasl { mechanisms } => {
                if !mechanisms.contains(&SCRAM_SHA_256) {
                    return Err(UpstreamError::UnsupportedAuth(mechanisms.join(", ")));
                }
                let client = ScramClient::new(&credential.secret)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                let first = messages::sasl_initial_response(SCRAM_SHA_256, &client.client_first());
                scram = Some(client);
                first
            }
            AuthRequest::SaslContinue(data) => {
                let client = scram.as_mut().ok_or_else(|| {
                    UpstreamError::Protocol("SASL continue before SASL start".into())
                })?;
                messages::sasl_response(
                    &client
                        .client_final(data)
                        .map_err(|e| UpstreamError::Protocol(e.to_string()))?,
                )
            }
            AuthRequest::SaslFinal(data) => {
                let client = scram.as_ref().ok_or_else(|| {
                    UpstreamError::Protocol("SASL final before SASL start".into())
                })?;
                client
                    .verify_server_final(data)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                continue;
            }
            AuthRequest::Other(code) => {
                return Err(UpstreamError::UnsupportedAuth(format!("method {code}")));
            }
        };
        stream.write_all(&reply.raw).await.map_err(io)?;
    }
}

impl Upstream {
    /// Runs one simple query on a session the agent opened for itself (the
    /// metadata connection); text rows. An error from the target is
    /// returned as `Protocol` with the target's message.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
        self.stream
            .write_all(&messages::query(sql).raw)
            .await
            .map_err(io)?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let frame = next_frame(&mut self.stream, &mut self.reader).await?;
            match frame.tag {
                b'D' => rows.push(
                    messages::parse_data_row(frame.body())
                        .map_err(proto)?
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect(),
                ),
                b'E' => {
                    let fields = messages::parse_fields(frame.body()).unwrap_or_default();
                    failure = Some(
                        fields
                            .into_iter()
                            .find(|(c, _)| *c == b'M')
                            .map(|(_, m)| m)
                            .unwrap_or_default(),
                    );
                }
                b'A' => self.heard.push(notification_channel(frame.body())?),
                b'Z' => break,
                _ => {}
            }
        }
        match failure {
            Some(m) => Err(UpstreamError::Query(m)),
            None => Ok(rows),
        }
    }

    /// Waits for the next notification (after `LISTEN`) and returns its
    /// channel; anything else the idle connection receives (parameter
    /// changes, notices) is passed over. Cancel-safe: a partly read
    /// message stays buffered for the next call.
    pub async fn notification(&mut self) -> Result<String, UpstreamError> {
        if !self.heard.is_empty() {
            return Ok(self.heard.remove(0));
        }
        loop {
            let frame = next_frame(&mut self.stream, &mut self.reader).await?;
            match frame.tag {
                b'A' => return notification_channel(frame.body()),
                b'E' => {
                    let fields = messages::parse_fields(frame.body()).unwrap_or_default();
                    let m = fields
                        .into_iter()
                        .find(|(c, _)| *c == b'M')
                        .map(|(_, m)| m)
                        .unwrap_or_default();
                    return Err(UpstreamError::Query(m));
                }
                _ => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.write_all(&messages::terminate().raw).await;
    }
}

/// The channel a NotificationResponse names: after the sender's pid (4
/// bytes), up to its terminating zero.
fn notification_channel(body: &[u8]) -> Result<String, UpstreamError> {
    let name = body
        .get(4..)
        .and_then(|rest| rest.split(|b| *b == 0).next())
        .ok_or_else(|| UpstreamError::Protocol("a notification without a channel name".into()))?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    reader: &mut FrameReader,
) -> Result<sluice_pgwire::Frame, UpstreamError> {
    loop {
        if let Some(f) = reader
            .next_frame()
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            return Ok(f);
        }
        let n = stream.read_buf(reader.buffer()).await.map_err(io)?;
        if n == 0 {
            return Err(UpstreamError::Protocol(
                "the target database closed the connection".into(),
            ));
        }
    }
}

/// Upstream start-up errors are summarised, never relayed: a message such
/// as "password authentication failed for user X" names the credential.
fn scrubbed_error(body: &[u8], credential: &pb::Credential) -> UpstreamError {
    let fields = messages::parse_fields(body).unwrap_or_default();
    let code = fields
        .iter()
        .find(|(c, _)| *c == b'C')
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let message = fields
        .iter()
        .find(|(c, _)| *c == b'M')
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    tracing::warn!(sqlstate = code, message = %scrub(message, credential), "target refused the session");
    match code {
        "28P01" | "28000" => UpstreamError::AuthFailed,
        _ => UpstreamError::Refused(format!("{} (SQLSTATE {code})", scrub(message, credential))),
    }
}

/// Replaces the credential's secret in `text` (the user name is not secret).
pub fn scrub(text: &str, credential: &pb::Credential) -> String {
    let mut out = text.to_owned();
    if let Ok(secret) = std::str::from_utf8(&credential.secret)
        && secret.len() >= 4
    {
        out = out.replace(secret, "[REDACTED]");
    }
    out
}

fn io(e: std::io::Error) -> UpstreamError {
    UpstreamError::Connect(e.to_string())
}

fn proto(e: sluice_pgwire::ProtocolError) -> UpstreamError {
    UpstreamError::Protocol(e.to_string())
}
