//! Tokens of the RFC 7644 §3.4.2.2 filter grammar, shared by filters, PATCH paths
//! (§3.5.2) and `attributes` lists.
//!
//! Words are attribute paths, operators and keywords alike; the parser decides which,
//! case-insensitively. Strings are JSON strings (the RFC's `compValue` is JSON), so their
//! escapes are decoded by serde_json rather than by hand.

use serde_json::Number;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok<'a> {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Num(Number),
    /// An attribute path, operator or keyword: `[A-Za-z0-9_:.$-]+` not starting with a
    /// digit or `-`.
    Word(&'a str),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token<'a> {
    pub tok: Tok<'a>,
    /// Byte offset in the input, for error messages.
    pub pos: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'$' | b'-')
}

/// Splits `input` into tokens. Errors carry a message naming the byte offset and never
/// the text of a literal.
pub(super) fn tokenize(input: &str) -> Result<Vec<Token<'_>>, String> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let tok = match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'[' => {
                i += 1;
                Tok::LBracket
            }
            b']' => {
                i += 1;
                Tok::RBracket
            }
            b'"' => {
                let (s, end) = string(input, i)?;
                i = end;
                Tok::Str(s)
            }
            b'-' | b'0'..=b'9' => {
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                Tok::Num(
                    number(&input[start..i])
                        .ok_or_else(|| format!("invalid number at byte {start}"))?,
                )
            }
            _ if is_word_byte(b) => {
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                Tok::Word(&input[start..i])
            }
            _ => {
                // Report the character, not a byte of it: the input is valid UTF-8.
                let c = input[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected character {c:?} at byte {i}"));
            }
        };
        out.push(Token { tok, pos: start });
    }
    Ok(out)
}

/// A JSON number. serde_json checks the syntax; a non-integer is then parsed by the
/// standard library, which rounds correctly, so printing and re-reading a filter gives
/// back the same number (found by the fuzz target).
fn number(text: &str) -> Option<Number> {
    let n: Number = serde_json::from_str(text).ok()?;
    if n.is_f64() {
        return Number::from_f64(text.parse::<f64>().ok()?);
    }
    Some(n)
}

/// Reads the JSON string starting at the quote at `start`; returns it and the offset
/// after its closing quote.
fn string(input: &str, start: usize) -> Result<(String, usize), String> {
    let bytes = input.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                let s: String = serde_json::from_str(&input[start..=i])
                    .map_err(|_| format!("invalid string literal at byte {start}"))?;
                return Ok((s, i + 1));
            }
            _ => i += 1,
        }
    }
    Err(format!("unterminated string starting at byte {start}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_strings_numbers_and_brackets() {
        assert_eq!(
            toks(r#"emails[type eq "work"].value pr"#),
            vec![
                Tok::Word("emails"),
                Tok::LBracket,
                Tok::Word("type"),
                Tok::Word("eq"),
                Tok::Str("work".into()),
                Tok::RBracket,
                Tok::Word(".value"),
                Tok::Word("pr"),
            ]
        );
        assert_eq!(
            toks("x gt -1.5e3"),
            vec![
                Tok::Word("x"),
                Tok::Word("gt"),
                Tok::Num(serde_json::from_str("-1.5e3").unwrap())
            ]
        );
    }

    #[test]
    fn long_numbers_round_trip_through_display() {
        // Found by the fuzz target: serde_json's fast float parsing is not exact.
        let Tok::Num(n) = toks("-5000000000000000000000000000000000002").remove(0) else {
            panic!()
        };
        assert_eq!(toks(&n.to_string()), vec![Tok::Num(n)]);
    }

    #[test]
    fn urn_paths_are_one_word() {
        let s = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value";
        assert_eq!(toks(s), vec![Tok::Word(s)]);
    }

    #[test]
    fn json_escapes_are_decoded() {
        assert_eq!(
            toks(r#""a\"b\\c\u00e9\n""#),
            vec![Tok::Str("a\"b\\c\u{e9}\n".into())]
        );
        // Non-ASCII text passes through untouched.
        assert_eq!(toks("\"Zoë\""), vec![Tok::Str("Zoë".into())]);
    }

    #[test]
    fn errors_name_the_position_not_the_text() {
        let e = tokenize(r#"userName eq "secret"#).unwrap_err();
        assert_eq!(e, "unterminated string starting at byte 12");
        let e = tokenize(r#"a eq "bad\q""#).unwrap_err();
        assert_eq!(e, "invalid string literal at byte 5");
        assert!(!e.contains("bad"));
        assert_eq!(
            tokenize("a # b").unwrap_err(),
            "unexpected character '#' at byte 2"
        );
        assert_eq!(
            tokenize("a eq 1.2.3").unwrap_err(),
            "invalid number at byte 5"
        );
        assert_eq!(
            tokenize("a eq --1").unwrap_err(),
            "invalid number at byte 5"
        );
        // A trailing backslash must not read past the end.
        assert!(tokenize("\"\\").is_err());
    }

    #[test]
    fn raw_control_characters_in_strings_are_refused() {
        assert!(tokenize("\"a\u{1}b\"").is_err());
    }
}
