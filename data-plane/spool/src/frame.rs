//! Record framing: `len u32 LE | crc32 u32 LE | seq u64 LE | payload`.
//!
//! The checksum covers the length and sequence fields as well as the
//! payload, so a flipped bit in the header is detected just like one in the
//! payload, and a frame copied to the wrong place cannot pass as valid.

/// Size of the fixed frame header in bytes.
pub(crate) const HEADER_LEN: u64 = 16;

/// A decoded frame header. Nothing in it is trusted until the payload has
/// been read and the checksum verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) seq: u64,
}

impl Header {
    pub(crate) fn parse(b: &[u8; 16]) -> Header {
        Header {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            crc: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            seq: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }

    /// Total bytes this frame occupies on disk.
    pub(crate) fn frame_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.len)
    }
}

/// Incremental checksum of one frame, so recovery can verify a payload in
/// fixed-size chunks instead of allocating whatever a length field claims.
pub(crate) struct FrameCrc(crc32fast::Hasher);

impl FrameCrc {
    pub(crate) fn new(len: u32, seq: u64) -> FrameCrc {
        let mut h = crc32fast::Hasher::new();
        h.update(&len.to_le_bytes());
        h.update(&seq.to_le_bytes());
        FrameCrc(h)
    }

    pub(crate) fn update(&mut self, payload_chunk: &[u8]) {
        self.0.update(payload_chunk);
    }

    pub(crate) fn finish(self) -> u32 {
        self.0.finalize()
    }
}

/// Appends one encoded frame to `buf`. The caller has already checked that
/// the payload length fits in `len`.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, len: u32, payload: &[u8]) {
    let mut crc = FrameCrc::new(len, seq);
    crc.update(payload);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc.finish().to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, 3, b"abc");
        assert_eq!(buf.len(), 19);
        let mut head = [0u8; 16];
        head.copy_from_slice(&buf[..16]);
        let h = Header::parse(&head);
        assert_eq!((h.len, h.seq), (3, 42));
        let mut crc = FrameCrc::new(3, 42);
        crc.update(b"abc");
        assert_eq!(h.crc, crc.finish());
    }

    #[test]
    fn checksum_covers_header_fields() {
        let crc_of = |len, seq| {
            let mut c = FrameCrc::new(len, seq);
            c.update(b"abc");
            c.finish()
        };
        assert_ne!(crc_of(3, 42), crc_of(3, 43));
        assert_ne!(crc_of(3, 42), crc_of(4, 42));
    }
}
