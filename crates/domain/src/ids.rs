//! Typed identifiers. A bare `i64` never stands for a user or a generation.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A user, identified by their Telegram user id (stable across chats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A generation row (database-assigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GenerationId(pub i64);

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The KIE `model` string, for example `google/nano-banana`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelId(String);

/// A model id that is empty, too long or has characters KIE never uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model id {0:?}: expected 1-80 characters of a-z, A-Z, 0-9, '/', '-', '.', '_'")]
pub struct InvalidModelId(pub String);

impl ModelId {
    /// Parses a model id; the only way to build one.
    pub fn parse(s: &str) -> Result<Self, InvalidModelId> {
        let ok = !s.is_empty()
            && s.len() <= 80
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidModelId(s.to_owned()))
        }
    }

    /// The id as sent to KIE.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelId {
    type Error = InvalidModelId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ModelId> for String {
    fn from(id: ModelId) -> Self {
        id.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_accept_kie_names_and_reject_junk() {
        assert!(ModelId::parse("google/nano-banana").is_ok());
        assert!(ModelId::parse("seedream/4.5-edit").is_ok());
        assert!(ModelId::parse("").is_err());
        assert!(ModelId::parse("a b").is_err());
        assert!(ModelId::parse(&"x".repeat(81)).is_err());
    }
}
