//! A validated prompt: the only way user text reaches a KIE request.

use std::fmt;

/// Why a piece of text cannot be a prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// Nothing but white space.
    #[error("the text is empty")]
    Empty,
    /// More characters than the model accepts.
    #[error("the text has {len} characters; the limit is {max}")]
    TooLong {
        /// Characters in the text.
        len: usize,
        /// The model's limit.
        max: usize,
    },
    /// Control characters other than line breaks and tabs.
    #[error("the text contains control characters")]
    ControlCharacters,
}

/// Trimmed, non-empty text of at most the model's number of characters (Unicode
/// scalar values, which is how KIE and Telegram count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

impl Prompt {
    /// Validates `text` against a maximum length in characters.
    pub fn parse(text: &str, max_chars: usize) -> Result<Self, PromptError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(PromptError::Empty);
        }
        if t.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(PromptError::ControlCharacters);
        }
        let len = t.chars().count();
        if len > max_chars {
            return Err(PromptError::TooLong {
                len,
                max: max_chars,
            });
        }
        Ok(Prompt(t.to_owned()))
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The validated text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prompts_are_trimmed_and_bounded() {
        assert_eq!(Prompt::parse("  a cat  ", 10).unwrap().as_str(), "a cat");
        assert_eq!(Prompt::parse("   ", 10), Err(PromptError::Empty));
        assert_eq!(Prompt::parse("котик", 5).unwrap().as_str(), "котик");
        assert_eq!(
            Prompt::parse("котики", 5),
            Err(PromptError::TooLong { len: 6, max: 5 })
        );
        assert_eq!(
            Prompt::parse("a\u{0}b", 5),
            Err(PromptError::ControlCharacters)
        );
    }

    proptest! {
        #[test]
        fn accepted_prompts_never_exceed_the_limit(s in "\\PC{0,40}", max in 1usize..30) {
            if let Ok(p) = Prompt::parse(&s, max) {
                prop_assert!(p.as_str().chars().count() <= max);
                prop_assert!(!p.as_str().trim().is_empty());
            }
        }
    }
}
