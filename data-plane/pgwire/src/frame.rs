//! Message framing: a one-byte tag, a four-byte big-endian length that
//! includes itself, and a body. The reader enforces a maximum length
//! before buffering a body.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// One protocol message; `raw` holds the complete encoding (tag, length,
/// body) so it can be forwarded untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub raw: Bytes,
}

impl Frame {
    /// The body (after tag and length).
    pub fn body(&self) -> &[u8] {
        self.raw.get(5..).unwrap_or_default()
    }

    /// Builds a frame from a tag and body.
    pub fn new(tag: u8, body: &[u8]) -> Self {
        let mut raw = BytesMut::with_capacity(body.len() + 5);
        raw.put_u8(tag);
        raw.put_u32(u32::try_from(body.len() + 4).unwrap_or(u32::MAX));
        raw.put_slice(body);
        Self {
            tag,
            raw: raw.freeze(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message length {len} is invalid (limit {max} bytes)")]
    BadLength { len: u32, max: u32 },
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max: u32,
}

impl FrameReader {
    pub fn new(max: u32) -> Self {
        Self {
            buf: BytesMut::with_capacity(8 * 1024),
            max,
        }
    }

    /// The buffer to read socket data into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The announced size of the frame still arriving at the head of the
    /// buffer (tag included), once its header is in; `None` when the buffer
    /// is empty or starts with a complete frame.
    pub fn incomplete_len(&self) -> Option<usize> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let total = len as usize + 1;
        (total > self.buf.len()).then_some(total)
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 || len > self.max {
            return Err(FrameError::BadLength { len, max: self.max });
        }
        let total = len as usize + 1;
        if self.buf.len() < total {
            // Reserve for the rest now that the length is known to be sane.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let tag = self.buf[0];
        let raw = self.buf.split_to(total).freeze();
        Ok(Some(Frame { tag, raw }))
    }

    /// Takes every complete frame's bytes at once, without inspecting them
    /// beyond their lengths (fast path for forwarding). Returns the bytes
    /// and the tags seen.
    pub fn take_complete(&mut self, tags: &mut Vec<u8>) -> Result<Bytes, FrameError> {
        let mut end = 0usize;
        loop {
            let rest = &self.buf[end..];
            if rest.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if len < 4 || len > self.max {
                return Err(FrameError::BadLength { len, max: self.max });
            }
            let total = len as usize + 1;
            if rest.len() < total {
                break;
            }
            tags.push(rest[0]);
            end += total;
        }
        Ok(self.buf.split_to(end).freeze())
    }

    /// Drops `n` bytes (used by tests).
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_of_a_frame_still_arriving_is_known_from_its_header() {
        let mut r = FrameReader::new(1 << 20);
        assert_eq!(r.incomplete_len(), None);
        r.buffer().extend_from_slice(&[b'Q', 0, 0]);
        assert_eq!(r.incomplete_len(), None, "no header yet");
        r.buffer().extend_from_slice(&[0, 104, b'S']);
        assert_eq!(r.incomplete_len(), Some(105));
        r.buffer().extend_from_slice(&[b'x'; 98]);
        assert_eq!(r.incomplete_len(), Some(105));
        r.buffer().extend_from_slice(&[0]);
        assert_eq!(r.incomplete_len(), None, "complete");
        assert!(r.next_frame().unwrap().is_some());
        assert_eq!(r.incomplete_len(), None);
    }

    #[test]
    fn frames_split_across_reads() {
        let f = Frame::new(b'Q', b"select 1\0");
        let mut r = FrameReader::new(1024);
        r.buffer().extend_from_slice(&f.raw[..3]);
        assert_eq!(r.next_frame().unwrap(), None);
        r.buffer().extend_from_slice(&f.raw[3..]);
        let got = r.next_frame().unwrap().unwrap();
        assert_eq!(got.tag, b'Q');
        assert_eq!(got.body(), b"select 1\0");
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn length_limits_are_enforced_before_buffering() {
        for len in [0u32, 3, 1025, u32::MAX] {
            let mut r = FrameReader::new(1024);
            r.buffer().extend_from_slice(b"Q");
            r.buffer().extend_from_slice(&len.to_be_bytes());
            assert!(r.next_frame().is_err(), "{len}");
        }
    }

    #[test]
    fn take_complete_stops_at_a_partial_frame() {
        let a = Frame::new(b'D', b"abc");
        let b = Frame::new(b'C', b"SELECT 1\0");
        let mut r = FrameReader::new(1024);
        r.buffer().extend_from_slice(&a.raw);
        r.buffer().extend_from_slice(&b.raw[..4]);
        let mut tags = Vec::new();
        let bytes = r.take_complete(&mut tags).unwrap();
        assert_eq!(tags, vec![b'D']);
        assert_eq!(&bytes[..], &a.raw[..]);
        assert_eq!(r.pending(), 4);
    }
}
