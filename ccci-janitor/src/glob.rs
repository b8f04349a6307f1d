//! Shell patterns for `--only`, `--warm` and their `-file` variants.
//!
//! Patterns have fnmatch(3) semantics and are matched against the whole
//! domain: `*` any run of characters (dots included, so `warm-*` matches
//! `warm-a.ci.example.org`), `?` one character, `[…]` one character of a
//! bracket expression (ranges `[a-c0-9]`, negation by a leading `!` or `^`,
//! a `]` right after the opening bracket or its negation is literal, POSIX
//! classes such as `[[:digit:]]` and `[[:alpha:]]`, in the C locale), `\`
//! makes the next character literal. Matching is case-sensitive, as
//! fnmatch(3) is without `FNM_CASEFOLD`.
//!
//! The matcher is the `globset` crate (ripgrep's), which supports bracket
//! expressions with POSIX classes; no hand-written matcher. Its one
//! extension, `{a,b}` alternation, cannot matter for domains (no domain
//! contains `{`, `,` or `}`).
//!
//! A pattern that silently matched nothing would get a warm app reaped (or,
//! for `--only`, a CI app forgotten), so a pattern that cannot be parsed
//! (empty, an unclosed `[`, a reversed range, a trailing `\`, an unknown
//! class such as `[[:digits:]]`) is refused instead of being read literally
//! as sh(1) would.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// The class names of POSIX bracket expressions (`[[:digit:]]`).
const CLASSES: &[&str] = &[
    "alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
    "upper", "xdigit",
];

/// A parsed pattern; see the module doc.
#[derive(Clone)]
pub struct Glob {
    glob: globset::Glob,
    matcher: GlobMatcher,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.glob.glob())
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.glob.glob())
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.glob == other.glob
    }
}

/// An unknown class name in a `[:name:]` of `text`, if there is one:
/// globset reads such a bracket as a plain set, which matches no domain.
fn unknown_class(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(at) = rest.find("[:") {
        rest = &rest[at + 2..];
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        if rest[name_len..].starts_with(":]") && !CLASSES.contains(&&rest[..name_len]) {
            return Some(&rest[..name_len]);
        }
    }
    None
}

impl Glob {
    /// Parses `text`; the error says what is wrong (for clap's message).
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing".into());
        }
        if let Some(name) = unknown_class(text) {
            return Err(format!(
                "unknown character class [:{name}:] (known: {})",
                CLASSES.join(", ")
            ));
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        let matcher = glob.compile_matcher();
        Ok(Glob { glob, matcher })
    }

    /// Whether `name`, as a whole, matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// Several patterns, matched at once (one automaton for all of them).
#[derive(Clone)]
pub struct Patterns {
    globs: Vec<Glob>,
    set: GlobSet,
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.globs).finish()
    }
}

impl Default for Patterns {
    fn default() -> Patterns {
        Patterns {
            globs: Vec::new(),
            set: GlobSet::empty(),
        }
    }
}

impl Patterns {
    /// The set of `globs`.
    pub fn new(globs: Vec<Glob>) -> anyhow::Result<Patterns> {
        let mut builder = GlobSetBuilder::new();
        for glob in &globs {
            builder.add(glob.glob.clone());
        }
        Ok(Patterns {
            set: builder.build()?,
            globs,
        })
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The first pattern (in the order given) that `name` matches.
    pub fn first_match(&self, name: &str) -> Option<&Glob> {
        if self.globs.is_empty() {
            return None;
        }
        let matched = self.set.matches(name);
        matched.into_iter().min().map(|i| &self.globs[i])
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
        assert!(!m("warm-a.example", "xwarm-a.example"), "the whole domain");
        assert!(m("warm-*", "warm-a.ci.example.org"), "* crosses dots");
        assert!(m("warm-*", "warm-"));
        assert!(!m("warm-*", "xwarm-a"));
        assert!(m("*.ci.example.org", "wp-1.ci.example.org"));
        assert!(!m("*.ci.example.org", "wp-1.ci.example.org.evil"));
        assert!(
            !m("*.ci.example.org", "wp-1xci.example.org"),
            ". is literal"
        );
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "aXXbYYbZc"));
        assert!(!m("a*b*c", "aXXbYYbZ"));
        assert!(m("**x", "abx"));
        assert!(m("a**x", "a.b.x"));
        assert!(m("w?rm", "warm"));
        assert!(!m("w?rm", "wrm"));
        assert!(!m("Warm-*", "warm-a"), "case-sensitive, as fnmatch(3)");
        assert!(m("*a*a*a*a*a*b", &format!("{}b", "a".repeat(40))));
        assert!(!m("*a*a*a*a*a*b", &"a".repeat(40)));
        assert!(m("*-??????.ci.example.org", "wp-3f2a9c.ci.example.org"));
        assert!(!m("*-??????.ci.example.org", "wp-3f2a.ci.example.org"));
    }

    #[test]
    fn bracket_expressions_classes_and_escapes() {
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
        // SPEC §7 case 23: a class protects w1.x.
        assert!(m("w[[:digit:]].x", "w1.x"));
        assert!(!m("w[[:digit:]].x", "wa.x"));
        assert!(m("w[![:digit:]].x", "wa.x"));
        assert!(!m("w[![:digit:]].x", "w1.x"));
        assert!(m("[[:alpha:]][[:alnum:]-]*", "wp-3f2a"));
        assert!(!m("[[:alpha:]]*", "3f2a"));
        assert!(m("[[:lower:][:digit:]]", "q"));
        assert!(m("[[:xdigit:]][[:upper:]]", "fQ"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "",
            "warm-[0-9",
            "[",
            "[!",
            "a\\",
            "[z-a]",
            "w[[:digits:]].x",
            "[[:DIGIT:]]",
            "a}",
        ] {
            assert!(Glob::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Glob::parse("w*").unwrap().to_string(), "w*");
        let e = Glob::parse("w[[:digits:]].x").unwrap_err();
        assert!(e.contains("[:digits:]"), "{e}");
    }

    #[test]
    fn a_set_reports_the_first_pattern_given_that_matches() {
        let set = Patterns::new(
            ["b*", "a*", "*"]
                .iter()
                .map(|p| Glob::parse(p).unwrap())
                .collect(),
        )
        .unwrap();
        assert_eq!(set.first_match("bx").unwrap().to_string(), "b*");
        assert_eq!(set.first_match("ax").unwrap().to_string(), "a*");
        assert_eq!(set.first_match("c").unwrap().to_string(), "*");
        assert!(Patterns::default().first_match("c").is_none());
        assert!(Patterns::default().is_empty());
    }
}
