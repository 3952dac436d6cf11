//! Every user-visible string of the bot lives in the text catalogue
//! (`kiebot_tg::texts`), in Russian and English side by side. This scans the
//! bot's sources for string literals containing Cyrillic, the sure sign of a
//! text written inline; comments may say anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The string and char literals of Rust source `src`, with their line
/// numbers. Comments (line, block, doc) are skipped; raw strings are read up
/// to their closing quote and hashes.
fn literals(src: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (at(i + 1) == '"' || at(i + 1) == '#')
            && !(i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                // `r#ident`: a raw identifier.
                i = j;
                continue;
            }
            let start_line = line;
            let mut text = String::new();
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if chars[j] == '\n' {
                    line += 1;
                }
                text.push(chars[j]);
                j += 1;
            }
            out.push((start_line, text));
            i = j;
        } else if c == '"' {
            let start_line = line;
            let mut text = String::new();
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    text.push(chars[j]);
                    j += 1;
                }
                if at(j) == '\n' {
                    line += 1;
                }
                text.push(at(j));
                j += 1;
            }
            out.push((start_line, text));
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or else a lifetime.
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                out.push((line, chars[i + 1..j].iter().collect()));
                i = j + 1;
            } else if at(i + 2) == '\'' {
                out.push((line, at(i + 1).to_string()));
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn cyrillic(s: &str) -> bool {
    s.chars().any(|c| ('\u{0400}'..='\u{04FF}').contains(&c))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_finds_literals_and_skips_comments() {
    let src = "// Привет\n/* мир /* вложенный */ */\nfn f<'a>(x: &'a str) -> String {\n    let c = 'ж';\n    let r = r#\"raw \"да\"\"#;\n    format!(\"Пользователь {x}\")\n}\n";
    let found: Vec<(usize, String)> = literals(src)
        .into_iter()
        .filter(|(_, s)| cyrillic(s))
        .collect();
    assert_eq!(
        found,
        vec![
            (4, "ж".to_owned()),
            (5, "raw \"да\"".to_owned()),
            (6, "Пользователь {x}".to_owned()),
        ]
    );
    assert!(literals("/// Ответ: \"нет\"\nlet a = 1;").is_empty());
}

#[test]
fn no_bot_source_spells_out_a_russian_text() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "the bot's sources were not found");
    let mut inline = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, literal) in literals(&text) {
            if cyrillic(&literal) {
                inline.push(format!("{}:{line}: {literal:?}", file.display()));
            }
        }
    }
    assert!(
        inline.is_empty(),
        "texts belong in kiebot_tg::texts, not inline:\n{}",
        inline.join("\n")
    );
}
