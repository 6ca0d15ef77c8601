//! The start-up phase: start-up packets (SSL/GSS requests, cancel
//! requests, StartupMessage) and single messages read before a session is
//! established. Every length is checked before anything is allocated.

use tokio::io::{AsyncRead, AsyncReadExt as _};

pub const PROTOCOL_3_0: u32 = 196_608;
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Largest start-up packet accepted (PostgreSQL itself allows 10000).
pub const MAX_STARTUP: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed by the client")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid {what} length {len}")]
    BadLength { what: &'static str, len: i64 },
    #[error("malformed {0}")]
    Malformed(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: u32,
        key: u32,
    },
    /// A StartupMessage: protocol version and parameters in client order.
    Params {
        version: u32,
        params: Vec<(String, String)>,
    },
}

async fn read_u32<R: AsyncRead + Unpin>(r: &mut R) -> Result<u32, WireError> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b).await {
        Ok(_) => Ok(u32::from_be_bytes(b)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Closed),
        Err(e) => Err(e.into()),
    }
}

pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> Result<Startup, WireError> {
    let len = read_u32(r).await?;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(WireError::BadLength {
            what: "start-up packet",
            len: i64::from(len as i32),
        });
    }
    let code = read_u32(r).await?;
    let mut body = vec![0u8; (len - 8) as usize];
    r.read_exact(&mut body)
        .await
        .map_err(|_| WireError::Malformed("start-up packet (truncated)"))?;
    match code {
        SSL_REQUEST if body.is_empty() => Ok(Startup::Ssl),
        GSSENC_REQUEST if body.is_empty() => Ok(Startup::GssEnc),
        CANCEL_REQUEST if body.len() == 8 => Ok(Startup::Cancel {
            pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            key: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            Err(WireError::Malformed("start-up request"))
        }
        version => Ok(Startup::Params {
            version,
            params: parse_params(&body)?,
        }),
    }
}

fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut fields = body.split(|b| *b == 0);
    let mut params = Vec::new();
    loop {
        let key = fields
            .next()
            .ok_or(WireError::Malformed("start-up parameters (unterminated)"))?;
        if key.is_empty() {
            // The terminating empty key; nothing but the final split may follow.
            return if fields.all(|f| f.is_empty()) {
                Ok(params)
            } else {
                Err(WireError::Malformed("start-up parameters"))
            };
        }
        let value = fields
            .next()
            .ok_or(WireError::Malformed("start-up parameters (missing value)"))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| WireError::Malformed("start-up parameter name"))?;
        let value = std::str::from_utf8(value)
            .map_err(|_| WireError::Malformed("start-up parameter value"))?;
        params.push((key.to_owned(), value.to_owned()));
    }
}

/// Reads one regular message (type byte, length, body) of at most `max` bytes.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<(u8, Vec<u8>), WireError> {
    let mut tag = [0u8; 1];
    match r.read_exact(&mut tag).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = read_u32(r).await?;
    if len < 4 || len > max {
        return Err(WireError::BadLength {
            what: "message",
            len: i64::from(len as i32),
        });
    }
    let mut body = vec![0u8; (len - 4) as usize];
    r.read_exact(&mut body)
        .await
        .map_err(|_| WireError::Malformed("message (truncated)"))?;
    Ok((tag[0], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = (u32::try_from(body.len() + 8).unwrap())
            .to_be_bytes()
            .to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn parses_startup_params() {
        let p = packet(PROTOCOL_3_0, b"user\0alice\0database\0orders\0\0");
        let s = read_startup(&mut p.as_slice()).await.unwrap();
        assert_eq!(
            s,
            Startup::Params {
                version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "orders".into())
                ]
            }
        );
    }

    #[tokio::test]
    async fn rejects_bad_lengths_and_garbage() {
        for len in [0u32, 4, 7, MAX_STARTUP + 1, u32::MAX] {
            let mut p = len.to_be_bytes().to_vec();
            p.extend_from_slice(&[0; 8]);
            assert!(
                matches!(
                    read_startup(&mut p.as_slice()).await,
                    Err(WireError::BadLength { .. })
                ),
                "{len}"
            );
        }
        let p = packet(PROTOCOL_3_0, b"user\0alice");
        assert!(read_startup(&mut p.as_slice()).await.is_err());
        let p = packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0");
        assert!(read_startup(&mut p.as_slice()).await.is_err());
        let p = packet(SSL_REQUEST, b"xx");
        assert!(read_startup(&mut p.as_slice()).await.is_err());
        let mut short = packet(PROTOCOL_3_0, b"user\0alice\0\0");
        short.truncate(10);
        assert!(read_startup(&mut short.as_slice()).await.is_err());
    }

    #[tokio::test]
    async fn message_length_is_bounded() {
        let mut m = vec![b'p'];
        m.extend_from_slice(&1_000_000u32.to_be_bytes());
        assert!(matches!(
            read_message(&mut m.as_slice(), 65_536).await,
            Err(WireError::BadLength { .. })
        ));
    }
}
