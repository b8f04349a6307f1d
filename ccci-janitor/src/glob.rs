//! Shell patterns for `--only`, `--warm` and their `-file` variants.
//!
//! Patterns are matched by the C library's `fnmatch(3)` (through the `libc`
//! crate), with no flags: not `FNM_PATHNAME` (`*` crosses `/`), not
//! `FNM_PERIOD` (a leading `.` is matched by `*` and `?`), case-sensitive,
//! against the whole domain. So a pattern means exactly what it means to
//! fnmatch(3) and to sh(1) `case`: `*` any run of characters (dots
//! included, so `warm-*` matches `warm-a.ci.example.org`), `?` one
//! character, `[…]` one character of a bracket expression (ranges
//! `[a-c0-9]`, negation by a leading `!`, or `^` unless `POSIXLY_CORRECT`
//! is set, a `]` right after the opening bracket or its negation is
//! literal, classes such as `[[:digit:]]`, equivalence classes `[[=a=]]`
//! and collating symbols `[[.a.]]`, in the C locale), `\` makes the next
//! character literal. Braces are not special: `or{g}` matches only the
//! text `or{g}`.
//!
//! # A pattern that cannot be parsed is refused
//!
//! fnmatch(3) has no error for a malformed pattern: it reads an unclosed
//! `[` as a literal, and answers "no match" for every name when a pattern
//! ends in `\`, names an unknown class (`[[:digits:]]`) or a collating
//! symbol of several characters. Such a pattern silently matches nothing,
//! which would get a warm app reaped (or, for `--only`, a CI app
//! forgotten). So before a pattern is used, [`Glob::parse`] reads it with
//! fnmatch(3)'s grammar (glibc's reading, which is also POSIX's) and
//! refuses, with a reason: an empty pattern, a NUL byte, a trailing `\`, an
//! unclosed `[`, a reversed range (`[z-a]`), a `[:`, `[=` or `[.` inside
//! brackets that is not a known class, one-character equivalence class or
//! one-character collating symbol, and a range that starts or ends with a
//! class or collating symbol (glibc reads those in ways no shell user
//! expects). Everything else is handed to fnmatch(3) unchanged. The reading
//! is not a matcher; the fuzz target `patterns_vs_libc` checks that what it
//! accepts it understands exactly as fnmatch(3) does.

use std::ffi::CString;
use std::fmt;

/// The class names of POSIX bracket expressions (`[[:digit:]]`).
const CLASSES: &[&str] = &[
    "alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
    "upper", "xdigit",
];

/// One element of a pattern as fnmatch(3) reads it: what [`Glob::parse`]
/// understood, exposed so that a test can check that understanding against
/// fnmatch(3) itself. Matching never uses it.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// This byte.
    Literal(u8),
    /// `?`: any one byte.
    Any,
    /// `*`: any run of bytes.
    Star,
    /// `[…]`: one byte of the set (bit `b` of the 256-bit mask), already
    /// negated when the bracket was.
    Set([u64; 4]),
}

/// A parsed pattern; see the module doc.
#[derive(Clone)]
pub struct Glob {
    text: String,
    c_text: CString,
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

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.text == other.text
    }
}

/// A set of bytes, as a 256-bit mask.
#[derive(Default)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.add(b);
        }
    }

    fn add_class(&mut self, class: &str) {
        for b in 0..=255u8 {
            let yes = match class {
                "alnum" => b.is_ascii_alphanumeric(),
                "alpha" => b.is_ascii_alphabetic(),
                "blank" => b == b' ' || b == b'\t',
                "cntrl" => b.is_ascii_control(),
                "digit" => b.is_ascii_digit(),
                "graph" => b.is_ascii_graphic(),
                "lower" => b.is_ascii_lowercase(),
                "print" => b.is_ascii_graphic() || b == b' ',
                "punct" => b.is_ascii_punctuation(),
                // C's isspace: also the vertical tab, unlike is_ascii_whitespace.
                "space" => matches!(b, b'\t'..=b'\r' | b' '),
                "upper" => b.is_ascii_uppercase(),
                "xdigit" => b.is_ascii_hexdigit(),
                _ => false,
            };
            if yes {
                self.add(b);
            }
        }
    }
}

/// A member of a bracket expression.
enum Member {
    /// A byte (plain or escaped): it may start or end a range.
    Byte(u8),
    /// A class or an equivalence class, added to the set already.
    Class,
    /// A collating symbol, added already; glibc reads one followed by `-`
    /// in its own way, so that is refused.
    Symbol,
}

/// Reads `p[at..]`, right after a `[`, as a bracket expression; returns the
/// set and the index after its closing `]`.
fn bracket(p: &[u8], mut at: usize) -> Result<([u64; 4], usize), String> {
    // glibc reads `^` as `!` unless POSIXLY_CORRECT is set (then it is a member).
    let negate = match p.get(at) {
        Some(b'!') => true,
        Some(b'^') => std::env::var_os("POSIXLY_CORRECT").is_none(),
        _ => false,
    };
    if negate {
        at += 1;
    }
    let mut set = ByteSet::default();
    let mut first = true;
    loop {
        let Some(&c) = p.get(at) else {
            return Err("an unclosed [ (write \\[ for a literal one)".into());
        };
        if c == b']' && !first {
            at += 1;
            break;
        }
        first = false;
        let (start, next) = member(p, at, &mut set)?;
        at = next;
        // `a-z`; a `-` right before the closing `]` is a member.
        let range = p.get(at) == Some(&b'-') && p.get(at + 1).is_some_and(|&b| b != b']');
        match start {
            Member::Byte(lo) if range => {
                let (end, next) = member(p, at + 1, &mut ByteSet::default())?;
                let Member::Byte(hi) = end else {
                    return Err("a range cannot end with a class or collating symbol".into());
                };
                if lo > hi {
                    return Err(format!(
                        "the range {}-{} is reversed: it matches nothing",
                        char::from(lo).escape_default(),
                        char::from(hi).escape_default()
                    ));
                }
                set.add_range(lo, hi);
                at = next;
            }
            Member::Byte(b) => set.add(b),
            Member::Class if range => {
                return Err("a range cannot start with a class".into());
            }
            Member::Symbol if p.get(at) == Some(&b'-') => {
                return Err("a collating symbol cannot start a range".into());
            }
            Member::Class | Member::Symbol => {}
        }
    }
    if negate {
        for word in &mut set.0 {
            *word = !*word;
        }
    }
    Ok((set.0, at))
}

/// Reads one member of a bracket expression at `p[at..]` (not its closing
/// `]`): a byte, or a class, equivalence class or collating symbol, which
/// it adds to `set`. Returns it and the index after it.
fn member(p: &[u8], at: usize, set: &mut ByteSet) -> Result<(Member, usize), String> {
    match (p[at], p.get(at + 1)) {
        (b'\\', None) => Err("a trailing \\ matches nothing".into()),
        (b'\\', Some(&e)) => Ok((Member::Byte(e), at + 2)),
        (b'[', Some(&kind @ (b':' | b'=' | b'.'))) => {
            let end = [kind, b']'];
            let body = &p[at + 2..];
            let Some(len) = body.windows(2).position(|w| w == end) else {
                return Err(format!("an unclosed [{} inside brackets", char::from(kind)));
            };
            let name = &body[..len];
            let next = at + 2 + len + 2;
            if kind == b':' {
                let name = String::from_utf8_lossy(name);
                if !CLASSES.contains(&name.as_ref()) {
                    return Err(format!(
                        "unknown character class [:{name}:] (known: {})",
                        CLASSES.join(", ")
                    ));
                }
                set.add_class(&name);
                return Ok((Member::Class, next));
            }
            let &[only] = name else {
                return Err(format!(
                    "[{k}…{k}] must hold exactly one character (the C locale has no other names)",
                    k = char::from(kind)
                ));
            };
            set.add(only);
            Ok((
                if kind == b'=' {
                    Member::Class
                } else {
                    Member::Symbol
                },
                next,
            ))
        }
        (c, _) => Ok((Member::Byte(c), at + 1)),
    }
}

/// Reads `text` with fnmatch(3)'s grammar (see the module doc).
fn tokens(text: &str) -> Result<Vec<Token>, String> {
    if text.is_empty() {
        return Err("an empty pattern matches nothing".into());
    }
    let p = text.as_bytes();
    if p.contains(&0) {
        return Err("a pattern cannot hold a NUL byte".into());
    }
    let mut out = Vec::with_capacity(p.len());
    let mut at = 0;
    while at < p.len() {
        let (token, next) = match p[at] {
            b'*' => (Token::Star, at + 1),
            b'?' => (Token::Any, at + 1),
            b'\\' => match p.get(at + 1) {
                Some(&e) => (Token::Literal(e), at + 2),
                None => return Err("a trailing \\ matches nothing".into()),
            },
            b'[' => {
                let (set, next) = bracket(p, at + 1)?;
                (Token::Set(set), next)
            }
            c => (Token::Literal(c), at + 1),
        };
        out.push(token);
        at = next;
    }
    Ok(out)
}

impl Glob {
    /// Parses `text`; the error says what is wrong (for clap's message).
    pub fn parse(text: &str) -> Result<Glob, String> {
        let tokens = tokens(text)?;
        let c_text = CString::new(text).map_err(|_| "a pattern cannot hold a NUL byte")?;
        Ok(Glob {
            text: text.to_string(),
            c_text,
            tokens,
        })
    }

    /// Whether `name`, as a whole, matches: fnmatch(3) with no flags. A
    /// name with a NUL byte (never a domain) matches nothing.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        if name.contains(&0) {
            return false;
        }
        // A domain has at most 253 bytes: no allocation per match.
        let mut short = [0u8; 256];
        let long;
        let c_name = if name.len() < short.len() {
            short[..name.len()].copy_from_slice(name);
            &short[..]
        } else {
            long = [name, b"\0"].concat();
            &long[..]
        };
        // NUL-terminated by the zero after its bytes, and holds no other.
        let Ok(c_name) = std::ffi::CStr::from_bytes_until_nul(c_name) else {
            return false;
        };
        ccci_common::sys::fnmatch(&self.c_text, c_name)
    }

    /// How the pattern was read (see [`Token`]), for tests.
    #[doc(hidden)]
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// What the reading ([`Glob::tokens`]) says about `name`: only there to
    /// check the reading against fnmatch(3) (the fuzz target
    /// `patterns_vs_libc` and the tests); [`Glob::matches`] never uses it.
    #[doc(hidden)]
    pub fn reading_matches(&self, name: &[u8]) -> bool {
        // can[j]: the tokens so far match name[..j].
        let mut can = vec![false; name.len() + 1];
        can[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; name.len() + 1];
            for j in 0..=name.len() {
                next[j] = match token {
                    Token::Star => can[j] || (j > 0 && next[j - 1]),
                    _ if j == 0 => false,
                    Token::Literal(l) => can[j - 1] && name[j - 1] == *l,
                    Token::Any => can[j - 1],
                    Token::Set(set) => {
                        let b = name[j - 1];
                        can[j - 1] && set[usize::from(b >> 6)] >> (b & 63) & 1 == 1
                    }
                };
            }
            can = next;
        }
        can[name.len()]
    }
}

/// Several patterns.
#[derive(Clone, Default)]
pub struct Patterns {
    globs: Vec<Glob>,
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.globs).finish()
    }
}

impl Patterns {
    /// The set of `globs`.
    pub fn new(globs: Vec<Glob>) -> anyhow::Result<Patterns> {
        Ok(Patterns { globs })
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The first pattern (in the order given) that `name` matches.
    pub fn first_match(&self, name: &str) -> Option<&Glob> {
        self.globs.iter().find(|g| g.matches(name))
    }
}

#[cfg(test)]
mod tests;
