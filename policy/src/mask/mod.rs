//! Masking by value: detectors that find sensitive values inside text, and
//! the strategies that rewrite them.
//!
//! The agent runs [`mask_text`] over every text value of every result row
//! (and over notices, error messages and recordings), so the detectors are
//! hand-written byte scanners: no regex, no allocation unless something
//! matched, one pass per detector that jumps between cheap anchor bytes
//! (`@`, digits, `+`, `(`, uppercase letters, `-----BEGIN`).
//!
//! Every pattern starts and ends on an ASCII byte, so match offsets are always
//! on char boundaries whatever Unicode text surrounds them. Nothing here
//! panics on any input; when in doubt a detector matches more rather than
//! less, and a private key whose END marker is missing is masked to the end
//! of the text (fail closed).

mod detectors;
mod strategy;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::model::{Detector, MaskStrategy};

pub use strategy::{REDACTED, apply};

/// One sensitive value found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// Byte offset of the first byte (on a char boundary).
    pub start: usize,
    /// Byte offset just past the last byte (on a char boundary).
    pub end: usize,
    /// The detector that found it.
    pub detector: Detector,
}

impl Match {
    /// The matched text.
    pub fn as_str<'t>(&self, text: &'t str) -> Option<&'t str> {
        text.get(self.start..self.end)
    }
}

/// Finds the sensitive values in `text`, left to right, without overlaps.
///
/// When matches of different detectors overlap, they are merged into one
/// match covering both (so nothing either found stays visible), attributed
/// to the longer one; on equal length, to the detector listed first. Returns an
/// empty vector (no allocation) when nothing matched.
pub fn find(detectors: &[Detector], text: &str) -> Vec<Match> {
    // One cheap pass rules out detectors that cannot match: most values
    // have no `@` and few digits.
    let (digits, has_at) = text.bytes().fold((0usize, false), |(d, at), c| {
        (d + usize::from(c.is_ascii_digit()), at || c == b'@')
    });
    // (rank in `detectors`, match): a detector's own matches never overlap.
    let mut found: Vec<(usize, Match)> = Vec::new();
    for (rank, &detector) in detectors.iter().enumerate() {
        if detectors.iter().take(rank).any(|&d| d == detector) {
            continue;
        }
        let possible = match detector {
            Detector::Email => has_at,
            Detector::CreditCard => digits >= 13,
            Detector::Ssn => digits >= 9,
            Detector::Phone => digits >= 8,
            Detector::Iban => digits >= 2,
            Detector::CloudKey | Detector::Jwt | Detector::PrivateKey => true,
        };
        if !possible {
            continue;
        }
        detectors::scan(detector, text, &mut |start, end| {
            if start < end {
                let (start, end) = widen_to_char_boundaries(text, start, end);
                found.push((
                    rank,
                    Match {
                        start,
                        end,
                        detector,
                    },
                ));
            }
        });
    }
    if found.len() <= 1 {
        return found.into_iter().map(|(_, m)| m).collect();
    }
    resolve_overlaps(found)
}

/// Merges overlapping matches into one span covering all of them, so no
/// byte any detector matched stays visible; a merged span is attributed to
/// its longest part (then the detector listed first).
fn resolve_overlaps(mut found: Vec<(usize, Match)>) -> Vec<Match> {
    found.sort_by_key(|&(rank, m)| (m.start, std::cmp::Reverse(m.end), rank));
    // (rank of the attributed part, its length, the merged span)
    let mut merged: Vec<(usize, usize, Match)> = Vec::with_capacity(found.len());
    for (rank, m) in found {
        let len = m.end - m.start;
        match merged.last_mut() {
            Some((best_rank, best_len, span)) if m.start < span.end => {
                if len > *best_len || (len == *best_len && rank < *best_rank) {
                    (*best_rank, *best_len, span.detector) = (rank, len, m.detector);
                }
                span.end = span.end.max(m.end);
            }
            _ => merged.push((rank, len, m)),
        }
    }
    merged.into_iter().map(|(_, _, m)| m).collect()
}

/// Scanners only cut at ASCII bytes; this keeps that promise even if one
/// ever did not, by growing the span rather than shrinking it (fail closed).
fn widen_to_char_boundaries(text: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    end = end.min(text.len());
    start = start.min(end);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// Rewrites every value the detectors find in `text` with `strategy`.
///
/// Returns `Some(Cow::Borrowed(text))` when nothing matched (no allocation),
/// `Some(Cow::Owned(_))` with every match replaced by [`apply`], and `None`
/// when the whole value must become SQL NULL: the `null` strategy with at
/// least one match (or, defensively, a match that could not be sliced).
pub fn mask_text<'t>(
    detectors: &[Detector],
    strategy: MaskStrategy,
    text: &'t str,
    key: &[u8],
) -> Option<Cow<'t, str>> {
    let matches = find(detectors, text);
    if matches.is_empty() {
        return Some(Cow::Borrowed(text));
    }
    if strategy == MaskStrategy::Null {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut last = 0;
    for m in &matches {
        out.push_str(text.get(last..m.start)?);
        out.push_str(&apply(strategy, m.as_str(text)?, key)?);
        last = m.end;
    }
    out.push_str(text.get(last..)?);
    Some(Cow::Owned(out))
}
