//! Splitting text into pieces Telegram accepts.

/// Length as Telegram counts it: UTF-16 code units (an emoji outside the
/// Basic Multilingual Plane counts 2).
pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Splits `text` into pieces of at most `max_utf16` UTF-16 code units,
/// preferring to break at a blank line, then a line break, then a space, as
/// long as that keeps a piece at least half full; otherwise it cuts between
/// characters. Whitespace at the breaks is dropped (Telegram trims it anyway);
/// nothing else is lost. Empty or blank text gives no pieces.
pub fn split_text(text: &str, max_utf16: usize) -> Vec<String> {
    let max = max_utf16.max(2);
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while utf16_len(rest) > max {
        let mut units = 0;
        let mut cut = 0;
        for (i, ch) in rest.char_indices() {
            if units + ch.len_utf16() > max {
                break;
            }
            units += ch.len_utf16();
            cut = i + ch.len_utf8();
        }
        let head = &rest[..cut];
        let half = cut / 2;
        let at = head
            .rfind("\n\n")
            .filter(|&i| i >= half && i > 0)
            .or_else(|| head.rfind('\n').filter(|&i| i >= half && i > 0))
            .or_else(|| {
                head.rfind(char::is_whitespace)
                    .filter(|&i| i >= half && i > 0)
            })
            .unwrap_or(cut);
        let (piece, tail) = rest.split_at(at);
        let piece = piece.trim_end();
        if !piece.is_empty() {
            pieces.push(piece.to_owned());
        }
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_stays_whole() {
        assert_eq!(split_text("  hello  ", 10), ["hello"]);
        assert!(split_text(" \n ", 10).is_empty());
    }

    #[test]
    fn breaks_prefer_paragraphs_then_lines_then_spaces() {
        assert_eq!(
            split_text("aaaa bbbb\n\ncccc dddd", 15),
            ["aaaa bbbb", "cccc dddd"]
        );
        assert_eq!(
            split_text("aaaa bbbb\ncccc dddd", 15),
            ["aaaa bbbb", "cccc dddd"]
        );
        assert_eq!(
            split_text("aaaa bbbb cccc dddd", 15),
            ["aaaa bbbb cccc", "dddd"]
        );
        assert_eq!(split_text("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn emoji_count_as_two_units_and_are_never_cut() {
        let pieces = split_text("😀😀😀", 4);
        assert_eq!(pieces, ["😀😀", "😀"]);
    }

    proptest! {
        #[test]
        fn pieces_fit_and_keep_every_visible_character(text in "[a-zé😀 \n]{0,300}", max in 2usize..50) {
            let pieces = split_text(&text, max);
            for piece in &pieces {
                prop_assert!(utf16_len(piece) <= max);
                prop_assert!(!piece.trim().is_empty());
            }
            let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            prop_assert_eq!(visible(&pieces.concat()), visible(&text));
        }
    }
}
