//! Paths into a document and the source line they start on.
//!
//! serde_yaml keeps no spans after deserialization, but it does attach the
//! position of the node being read to any error raised while reading it. So
//! to find the line of `policies[0].rules[2].approve.min` we read the text
//! once more, walking only down that path, and fail on purpose at the
//! target node: the error carries its line. This costs one extra parse per
//! reported error, only on the error path.
//!
//! Limitations: the line is where the node starts (for a mapping, its first
//! key); a node reached through a YAML alias reports the anchor's line; and
//! a path that does not exist in the text (a missing field) reports the line
//! of its nearest existing ancestor.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A path such as `policies[0].rules[2].deny`, printed the way
/// serde_path_to_error prints paths so that syntax and semantic errors look
/// alike.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document root.
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line where `path` (or its nearest existing ancestor) starts
/// in `text`, or `None` if the text does not parse as YAML at all.
pub(crate) fn line_of(text: &str, path: &FieldPath) -> Option<usize> {
    (0..=path.0.len()).rev().find_map(|len| {
        let target = path.0.get(..len)?;
        let seed = Walk { target };
        match seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
            // Found: the deliberate error carries the node's position.
            Err(err) if err.to_string().contains(FOUND) => err.location().map(|l| l.line()),
            // Not there (or the text is broken): try the parent.
            _ => None,
        }
    })
}

const FOUND: &str = "sluice-policy: located";

/// Walks down `target`, skipping every other branch.
struct Walk<'a> {
    target: &'a [Segment],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.target.is_empty() {
            deserializer.deserialize_any(Found)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match (self.target.split_first(), key.0) {
                (Some((Segment::Key(want), rest)), Some(got)) if *want == got => {
                    map.next_value_seed(Walk { target: rest })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let more = match self.target.split_first() {
                Some((Segment::Index(want), rest)) if *want == index => {
                    seq.next_element_seed(Walk { target: rest })?
                }
                _ => seq.next_element::<IgnoredAny>()?.map(|_| ()),
            };
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    // Scalars end the walk without reaching the target.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A mapping key as text, if it is a scalar.
struct Key(Option<String>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// Fails on whatever node it is given, to capture that node's position.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
policies:
  - name: a
    rules:
      - deny: {}
      - limit:
          rows: 0
  - name: b
";

    #[test]
    fn paths_display_like_serde_path_to_error() {
        let path = FieldPath::root()
            .key("policies")
            .index(0)
            .key("rules")
            .index(2)
            .key("deny");
        assert_eq!(path.to_string(), "policies[0].rules[2].deny");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn finds_lines_of_nodes() {
        let policies = FieldPath::root().key("policies");
        assert_eq!(line_of(TEXT, &policies.index(0)), Some(2));
        assert_eq!(line_of(TEXT, &policies.index(1).key("name")), Some(7));
        let rules = policies.index(0).key("rules");
        assert_eq!(line_of(TEXT, &rules.index(0)), Some(4));
        assert_eq!(
            line_of(TEXT, &rules.index(1).key("limit").key("rows")),
            Some(6)
        );
        // Missing field: nearest ancestor.
        assert_eq!(
            line_of(TEXT, &rules.index(0).key("deny").key("sql")),
            Some(4)
        );
    }
}
