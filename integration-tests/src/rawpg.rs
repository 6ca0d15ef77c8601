//! A raw PostgreSQL protocol client for tests that need exact control of
//! message order (pipelining, Flush, max_rows), which real drivers hide.

use std::time::Duration;

use sluice_pgwire::{Frame, FrameReader, messages};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

/// One frame as bytes.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    Frame::new(tag, body).raw.to_vec()
}

/// Parse (`P`) of `query` as statement `name`, no parameter types.
pub fn parse(name: &str, query: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{query}\0\0\0").as_bytes())
}

/// Parse (`P`) of `query` as statement `name`, declaring its parameters'
/// types by OID.
pub fn parse_typed(name: &str, query: &str, types: &[u32]) -> Vec<u8> {
    let mut body = format!("{name}\0{query}\0").into_bytes();
    let count = i16::try_from(types.len()).expect("at most 32767 parameters");
    body.extend_from_slice(&count.to_be_bytes());
    for t in types {
        body.extend_from_slice(&t.to_be_bytes());
    }
    frame(b'P', &body)
}

/// Bind (`B`) of `statement` into `portal`, no parameters, text results.
pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
    frame(
        b'B',
        format!("{portal}\0{statement}\0\0\0\0\0\0\0").as_bytes(),
    )
}

/// Bind (`B`) of `statement` into `portal` with text parameters, text
/// results.
pub fn bind_text(portal: &str, statement: &str, params: &[&str]) -> Vec<u8> {
    let params: Vec<&[u8]> = params.iter().map(|p| p.as_bytes()).collect();
    bind_with(portal, statement, &[], &params)
}

/// Bind (`B`) of `statement` into `portal` with binary parameters, text
/// results.
pub fn bind_binary(portal: &str, statement: &str, params: &[&[u8]]) -> Vec<u8> {
    bind_with(portal, statement, &[1], params)
}

/// Bind (`B`) with these parameter format codes and values, text results.
fn bind_with(portal: &str, statement: &str, formats: &[i16], params: &[&[u8]]) -> Vec<u8> {
    let mut body = format!("{portal}\0{statement}\0").into_bytes();
    let count = |n: usize| i16::try_from(n).expect("at most 32767").to_be_bytes();
    body.extend_from_slice(&count(formats.len()));
    for f in formats {
        body.extend_from_slice(&f.to_be_bytes());
    }
    body.extend_from_slice(&count(params.len()));
    for p in params {
        let len = i32::try_from(p.len()).expect("a parameter under 2 GiB");
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(p);
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &body)
}

/// Describe (`D`) of statement `name`.
pub fn describe_statement(name: &str) -> Vec<u8> {
    frame(b'D', format!("S{name}\0").as_bytes())
}

/// Close (`C`) of statement `name`.
pub fn close_statement(name: &str) -> Vec<u8> {
    frame(b'C', format!("S{name}\0").as_bytes())
}

/// Execute (`E`) of `portal`, at most `max_rows` rows (0: all).
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    messages::execute(portal, max_rows).raw.to_vec()
}

pub fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

pub fn flush() -> Vec<u8> {
    frame(b'H', b"")
}

pub fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', format!("{sql}\0").as_bytes())
}

/// What a [`RawSession`] talks over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A session through the agent: start-up as `user` on `database`, the
/// token as password, ready for queries.
pub struct RawSession {
    stream: Box<dyn Io>,
    reader: FrameReader,
    port: u16,
    /// BackendKeyData: what a CancelRequest for this session carries.
    pub cancel_key: (u32, u32),
}

impl RawSession {
    pub async fn connect(port: u16, database: &str, token: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Self::log_in(Box::new(stream), port, database, token).await
    }

    /// [`RawSession::connect`] over TLS (SSLRequest first), verifying the
    /// agent's certificate for `127.0.0.1` against `ca_pem`.
    pub async fn connect_tls(port: u16, database: &str, token: &str, ca_pem: &str) -> Self {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(&messages::ssl_request()).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], b'S', "the agent declined TLS");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        Self::log_in(Box::new(tls), port, database, token).await
    }

    async fn log_in(stream: Box<dyn Io>, port: u16, database: &str, token: &str) -> Self {
        let mut s = Self {
            stream,
            reader: FrameReader::new(1 << 20),
            port,
            cancel_key: (0, 0),
        };
        s.send(&messages::startup_message(&[
            ("user", "alice"),
            ("database", database),
        ]))
        .await;
        s.until(b'R').await;
        s.send(&messages::password_message(token.as_bytes()).raw)
            .await;
        let hello = s.until(b'Z').await;
        if let Some(k) = hello.iter().find(|f| f.tag == b'K') {
            s.cancel_key = messages::parse_backend_key_data(k.body()).unwrap();
        }
        s
    }

    /// Sends a CancelRequest for this session on a new connection.
    pub async fn cancel(&self) {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let (pid, key) = self.cancel_key;
        c.write_all(&messages::cancel_request(pid, key))
            .await
            .unwrap();
        let _ = c.shutdown().await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends `bytes`; a connection the agent closed is an error, not a panic.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Frames up to and including the first with `tag`, or all until the
    /// peer closed the connection; waits as long as it takes.
    pub async fn until_or_closed(&mut self, tag: u8) -> Vec<Frame> {
        let mut all = Vec::new();
        loop {
            while let Some(f) = self.reader.next_frame().unwrap() {
                let done = f.tag == tag;
                all.push(f);
                if done {
                    return all;
                }
            }
            match self.stream.read_buf(self.reader.buffer()).await {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
        }
    }

    /// Writes as much of `bytes` as the peer takes, until a write makes no
    /// progress for `wait` (the peer stopped reading); returns how much.
    pub async fn send_some(&mut self, bytes: &[u8], wait: Duration) -> usize {
        let mut sent = 0;
        while sent < bytes.len() {
            match tokio::time::timeout(wait, self.stream.write(&bytes[sent..])).await {
                Ok(n) => sent += n.unwrap(),
                Err(_) => break,
            }
        }
        sent
    }

    /// Frames up to and including the first with `tag`.
    pub async fn until(&mut self, tag: u8) -> Vec<Frame> {
        self.until_n(tag, 1).await
    }

    /// Frames up to and including the `n`th with `tag`.
    pub async fn until_n(&mut self, tag: u8, mut n: usize) -> Vec<Frame> {
        let mut all = Vec::new();
        loop {
            while let Some(f) = self.reader.next_frame().unwrap() {
                let done = f.tag == tag && {
                    n -= 1;
                    n == 0
                };
                all.push(f);
                if done {
                    return all;
                }
            }
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.stream.read_buf(self.reader.buffer()),
            )
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for `{}`", tag as char))
            .unwrap();
            assert!(
                read > 0,
                "connection closed while waiting for `{}`",
                tag as char
            );
        }
    }
}

/// The tags of `frames`, as a string (e.g. `"12DDCZ"`).
pub fn tags(frames: &[Frame]) -> String {
    frames.iter().map(|f| f.tag as char).collect()
}

/// The text of the error fields (`M`, `C`) of the ErrorResponses in `frames`.
pub fn errors(frames: &[Frame]) -> String {
    frames
        .iter()
        .filter(|f| f.tag == b'E')
        .flat_map(|f| messages::parse_fields(f.body()).unwrap_or_default())
        .filter(|(c, _)| *c == b'M' || *c == b'C')
        .map(|(_, v)| v)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The text values of the DataRows in `frames` (first column).
pub fn first_column(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.tag == b'D')
        .map(|f| {
            let body = f.body();
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            let len = usize::try_from(len).unwrap_or(0);
            String::from_utf8_lossy(&body[6..6 + len]).into_owned()
        })
        .collect()
}
