//! Human-friendly durations (`30s`, `5m`, `1h30m`, `2d`) as used by approval
//! timeouts and TTLs.
//!
//! A tiny parser rather than a dependency: policies only need whole seconds
//! and a handful of units, and the format must stay stable because compiled
//! snapshots carry it.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of seconds, written as `1h30m` etc.
///
/// Accepts a string of `<number><unit>` groups (units `s`, `m`, `h`, `d`, each
/// at most once, largest first) or a bare integer number of seconds.
/// Serializes back to the canonical string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PolicyDuration {
    secs: u64,
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{text}`: {why} (expected e.g. `30s`, `5m`, `1h30m`, `2d`)")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

impl PolicyDuration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self { secs }
    }

    /// The duration in whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.secs
    }

    /// The same duration as a [`std::time::Duration`], for timers.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }
}

impl FromStr for PolicyDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |why| DurationError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        if let Ok(secs) = trimmed.parse::<u64>() {
            return Ok(Self { secs });
        }
        let mut total: u64 = 0;
        let mut number: Option<u64> = None;
        // Units must appear largest first and at most once: `1h30m`, not `30m1h`.
        let mut last_unit_rank = usize::MAX;
        for c in trimmed.chars() {
            if let Some(digit) = c.to_digit(10) {
                let n = number.unwrap_or(0);
                number = Some(
                    n.checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(digit)))
                        .ok_or_else(|| fail("it is too large"))?,
                );
                continue;
            }
            let (rank, factor) = match c {
                'd' => (3, 86_400),
                'h' => (2, 3_600),
                'm' => (1, 60),
                's' => (0, 1),
                _ => return Err(fail("unknown unit; use s, m, h or d")),
            };
            let n = number
                .take()
                .ok_or_else(|| fail("a unit needs a number before it"))?;
            if rank >= last_unit_rank {
                return Err(fail("units must go from largest to smallest, once each"));
            }
            last_unit_rank = rank;
            total = n
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| fail("it is too large"))?;
        }
        if number.is_some() {
            return Err(fail("the last number has no unit"));
        }
        Ok(Self { secs: total })
    }
}

impl fmt::Display for PolicyDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secs == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.secs;
        for (unit, factor) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            let n = rest / factor;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                rest %= factor;
            }
        }
        Ok(())
    }
}

impl Serialize for PolicyDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PolicyDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = PolicyDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s`, `5m`, `1h30m` or `2d`")
            }

            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Self::Value, E> {
                Ok(PolicyDuration { secs })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(PolicyDuration::from_secs)
                    .map_err(|_| E::custom(format!("invalid duration `{v}`: it is negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Result<u64, DurationError> {
        text.parse::<PolicyDuration>().map(PolicyDuration::as_secs)
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("1h"), Ok(3_600));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs("1d2h3m4s"), Ok(93_784));
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs(" 10m "), Ok(600));
        assert_eq!(secs("0s"), Ok(0));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "m",
            "5x",
            "1m1h",
            "1m1m",
            "5m3",
            "-5m",
            "1.5h",
            "99999999999999999999d",
        ] {
            let err = secs(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert!(secs("99999999999999999999").is_err());
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for (text, canonical) in [
            ("90s", "1m30s"),
            ("1h30m", "1h30m"),
            ("2d", "2d"),
            ("0s", "0s"),
        ] {
            let d: PolicyDuration = text.parse().expect("valid");
            assert_eq!(d.to_string(), canonical);
            assert_eq!(canonical.parse::<PolicyDuration>(), Ok(d));
        }
        let json = serde_json::to_string(&PolicyDuration::from_secs(300)).expect("serialize");
        assert_eq!(json, "\"5m\"");
        let back: PolicyDuration = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.as_secs(), 300);
        let n: PolicyDuration = serde_json::from_str("45").expect("integer seconds");
        assert_eq!(n.to_std(), std::time::Duration::from_secs(45));
    }
}
