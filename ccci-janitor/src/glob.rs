//! Shell-style patterns for `--warm` and `--warm-file`.
//!
//! A pattern matches a whole domain: `*` any run of bytes (dots included,
//! so `warm-*` matches `warm-a.ci.example.org`), `?` one byte, `[…]` one
//! byte of a set (`[a-c0-9]`, negated by a leading `!` or `^`, a `]` right
//! after the opening bracket or its negation is literal), `\` makes the next
//! byte literal. Everything else matches itself.
//!
//! A warm pattern that silently matched nothing would get a warm app reaped,
//! so malformed patterns (empty, an unclosed `[`, a trailing `\`) are
//! refused instead of being read literally as sh(1) would.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    One,
    Any,
    Set {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// A parsed pattern; see the module doc.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Glob {
    /// Parses `text`; the error says what is wrong (for clap's message).
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing".into());
        }
        let bytes = text.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let token = match bytes[i] {
                b'*' => Token::Any,
                b'?' => Token::One,
                b'\\' => {
                    i += 1;
                    match bytes.get(i) {
                        Some(&b) => Token::Byte(b),
                        None => return Err("the pattern ends with a lone '\\'".into()),
                    }
                }
                b'[' => {
                    let (set, end) = parse_set(bytes, i)?;
                    i = end;
                    set
                }
                b => Token::Byte(b),
            };
            // Consecutive stars match what one star matches.
            if !(token == Token::Any && tokens.last() == Some(&Token::Any)) {
                tokens.push(token);
            }
            i += 1;
        }
        Ok(Glob {
            text: text.to_string(),
            tokens,
        })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let (mut t, mut n) = (0, 0);
        // Where to resume after the last `*`: (token after it, name position).
        let mut resume: Option<(usize, usize)> = None;
        while n < name.len() {
            let step = match self.tokens.get(t) {
                Some(Token::Any) => {
                    resume = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(token) => single(token, name[n]),
                None => false,
            };
            if step {
                t += 1;
                n += 1;
            } else if let Some((after_star, from)) = resume {
                // Let the last `*` take one more byte, and retry.
                t = after_star;
                n = from + 1;
                resume = Some((after_star, from + 1));
            } else {
                return false;
            }
        }
        self.tokens[t..].iter().all(|token| *token == Token::Any)
    }
}

fn single(token: &Token, b: u8) -> bool {
    match token {
        Token::Byte(want) => *want == b,
        Token::One => true,
        Token::Set { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
        }
        Token::Any => unreachable!("handled by the caller"),
    }
}

/// Parses the set starting at `bytes[open] == b'['`; returns it and the
/// index of its closing `]`.
fn parse_set(bytes: &[u8], open: usize) -> Result<(Token, usize), String> {
    let mut i = open + 1;
    let negated = matches!(bytes.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let first = i;
    let mut ranges = Vec::new();
    loop {
        let lo = match bytes.get(i) {
            None => return Err(format!("'[' at byte {} is never closed", open + 1)),
            Some(b']') if i > first => {
                return Ok((Token::Set { negated, ranges }, i));
            }
            Some(b'\\') => {
                i += 1;
                *bytes
                    .get(i)
                    .ok_or_else(|| "the pattern ends with a lone '\\'".to_string())?
            }
            Some(&b) => b,
        };
        let hi = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                i += 2;
                if hi < lo {
                    return Err(format!(
                        "the range '{}-{}' is reversed",
                        lo as char, hi as char
                    ));
                }
                hi
            }
            _ => lo,
        };
        ranges.push((lo, hi));
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Glob::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("warm-a.example", "warm-a.example"));
        assert!(!m("warm-a.example", "warm-a.example.org"));
        assert!(m("warm-*", "warm-a.ci.example.org"), "* crosses dots");
        assert!(m("warm-*", "warm-"));
        assert!(!m("warm-*", "xwarm-a"));
        assert!(m("*.ci.example.org", "wp-1.ci.example.org"));
        assert!(!m("*.ci.example.org", "wp-1.ci.example.org.evil"));
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "aXXbYYbZc"));
        assert!(!m("a*b*c", "aXXbYYbZ"));
        assert!(m("**x", "abx"));
        assert!(m("w?rm", "warm"));
        assert!(!m("w?rm", "wrm"));
        assert!(m("*a*a*a*a*a*b", &format!("{}b", "a".repeat(40))));
        assert!(!m("*a*a*a*a*a*b", &"a".repeat(40)));
    }

    #[test]
    fn sets_ranges_negation_and_escapes() {
        assert!(m("warm-[0-9]", "warm-7"));
        assert!(!m("warm-[0-9]", "warm-x"));
        assert!(m("warm-[!0-9]", "warm-x"));
        assert!(m("warm-[^0-9]", "warm-x"));
        assert!(!m("warm-[!0-9]", "warm-3"));
        assert!(m("[ab-]x", "-x"));
        assert!(m("[]a]x", "]x"));
        assert!(m("[!]]x", "ax"));
        assert!(!m("[!]]x", "]x"));
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m(r"[\]]", "]"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["", "warm-[0-9", "[", "[!", "a\\", "[z-a]"] {
            assert!(Glob::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Glob::parse("w*").unwrap().to_string(), "w*");
    }
}
