//! An app DOMAIN as a type (SPEC §1 "Names"): [`Domain`], a name that was
//! checked once, where it came in, and [`DomainList`], many of them held
//! compactly.
//!
//! The guarantee: every [`Domain`] is a valid DOMAIN. The only ways to make
//! one from text are [`Domain::parse`] and [`str::parse`], both of which
//! apply [`crate::names::check_domain`], so code that takes a `Domain`
//! never checks it again. Text becomes a `Domain` at the edges: the command
//! line, a socket, a file that lists domains, the names found in a lock dir
//! or under an etcd prefix.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use crate::cli::UsageError;
use crate::names;

/// A valid app DOMAIN: 1-253 bytes of `[A-Za-z0-9._-]`, starting with a
/// letter or digit. Owned and immutable; compares, sorts and hashes as its
/// text does, shows (`{}` and `{:?}`) and serializes as that text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(Box<str>);

impl Domain {
    /// `value` as a domain, or why it is none: the error text of
    /// [`names::domain`]. Shaped for clap's `value_parser`, so a bad DOMAIN
    /// on the command line is reported as before.
    pub fn parse(value: &str) -> Result<Domain, String> {
        names::check_domain(value)?;
        Ok(Domain(value.into()))
    }

    /// A domain from text already known to be one (it was pushed into a
    /// [`DomainList`] as a `Domain`); not checked again.
    fn known_valid(value: &str) -> Domain {
        debug_assert!(names::check_domain(value).is_ok(), "{value:?}");
        Domain(value.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Domain {
    type Err = String;

    fn from_str(value: &str) -> Result<Domain, String> {
        Domain::parse(value)
    }
}

impl Deref for Domain {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Domain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for Domain {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl PartialEq<str> for Domain {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Domain {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<Domain> for str {
    fn eq(&self, other: &Domain) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Domain> for &str {
    fn eq(&self, other: &Domain) -> bool {
        *self == &*other.0
    }
}

/// Domains held compactly, for a janitor pass over a lock dir of 100,000
/// claims: the bytes of every name in one buffer, each preceded by its
/// length (a domain has at most 253 bytes), and one 4-byte offset per name,
/// so that sorting moves offsets, never names. A name costs its length plus
/// 5 bytes, instead of a `String` (24 bytes, and a heap block of its own
/// with the allocator's overhead).
///
/// Only [`Domain`]s are pushed, so every name it holds is a valid DOMAIN,
/// and [`DomainList::iter`] and [`DomainList::get`] hand them out as
/// `Domain`s without checking them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainList {
    bytes: Vec<u8>,
    starts: Vec<u32>,
}

impl DomainList {
    /// An empty list.
    pub fn new() -> DomainList {
        DomainList::default()
    }

    /// Adds `domain` at the end. Refused only when the list is full (4 GiB
    /// of names: an offset must fit in 4 bytes).
    pub fn push(&mut self, domain: &Domain) -> Result<(), UsageError> {
        // A domain has at most 253 bytes, so its length fits in a byte.
        let (Ok(len), Ok(start)) = (u8::try_from(domain.len()), u32::try_from(self.bytes.len()))
        else {
            return Err(UsageError(format!(
                "invalid domain {}: too long",
                names::shell_quote(domain)
            )));
        };
        self.bytes.push(len);
        self.bytes.extend_from_slice(domain.as_bytes());
        self.starts.push(start);
        Ok(())
    }

    /// How many names it holds.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn at(&self, start: u32) -> &[u8] {
        let start = start as usize;
        let len = usize::from(self.bytes[start]);
        &self.bytes[start + 1..start + 1 + len]
    }

    /// The domain at `start`. Safe without a check: only the bytes of whole
    /// [`Domain`]s are pushed, so they are UTF-8 and a valid DOMAIN.
    fn domain_at(&self, start: u32) -> Domain {
        Domain::known_valid(std::str::from_utf8(self.at(start)).unwrap_or_default())
    }

    /// The `i`th domain.
    pub fn get(&self, i: usize) -> Option<Domain> {
        let start = *self.starts.get(i)?;
        Some(self.domain_at(start))
    }

    /// The domains in their order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Domain> + '_ {
        self.starts.iter().map(|&start| self.domain_at(start))
    }

    /// Sorts the domains (by bytes, as `str` sorts) and drops duplicates.
    pub fn sort_dedup(&mut self) {
        let mut starts = std::mem::take(&mut self.starts);
        starts.sort_unstable_by(|&a, &b| self.at(a).cmp(self.at(b)));
        starts.dedup_by(|a, b| self.at(*a) == self.at(*b));
        self.starts = starts;
    }
}

impl<D: std::borrow::Borrow<Domain>> FromIterator<D> for DomainList {
    /// Domains that do not fit (a full list) are left out.
    fn from_iter<I: IntoIterator<Item = D>>(iter: I) -> DomainList {
        let mut list = DomainList::new();
        for domain in iter {
            let _ = list.push(domain.borrow());
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_domains_parse_and_show_as_their_text() {
        for name in ["a", "0", "a.example", "A-b_c.9", &"a".repeat(253)] {
            let domain = Domain::parse(name).unwrap();
            assert_eq!(domain.as_str(), name);
            assert_eq!(&*domain, name);
            assert_eq!(domain.to_string(), name);
            assert_eq!(format!("{domain:?}"), format!("{name:?}"));
            assert_eq!(serde_json::to_string(&domain).unwrap(), format!("{name:?}"));
            assert_eq!(name.parse::<Domain>().unwrap(), domain);
        }
    }

    #[test]
    fn invalid_domains_are_refused_with_the_rule_s_text() {
        let long = "a".repeat(254);
        for name in [
            "", ".a", "-a", "_a", "a/b", "a b", "../x", "é", "a\n", &long,
        ] {
            let why = Domain::parse(name).unwrap_err();
            assert_eq!(why, names::domain(name).unwrap_err(), "{name:?}");
            assert_eq!(
                why,
                "not a valid domain: it must be 1-253 bytes of letters, digits, '.', '_' or \
                 '-', starting with a letter or digit"
            );
            assert!(name.parse::<Domain>().is_err());
        }
    }

    #[test]
    fn domains_sort_as_strings() {
        let mut domains: Vec<Domain> = ["b", "a.b", "A", "a"]
            .iter()
            .map(|n| Domain::parse(n).unwrap())
            .collect();
        domains.sort();
        assert_eq!(domains, ["A", "a", "a.b", "b"]);
    }

    #[test]
    fn a_domain_list_sorts_and_dedups_like_strings() {
        let names = ["b.example", "a", "ab", "b.example", "a-b", "Z", "a"];
        let domains: Vec<Domain> = names.iter().map(|n| Domain::parse(n).unwrap()).collect();
        let mut list: DomainList = domains.iter().collect();
        assert_eq!(list.len(), names.len());
        assert_eq!(list.get(1).as_deref(), Some("a"));
        list.sort_dedup();
        let mut want: Vec<&str> = names.to_vec();
        want.sort_unstable();
        want.dedup();
        assert_eq!(list.iter().collect::<Vec<_>>(), want);
        assert_eq!(list.get(want.len()), None);
        let longest = Domain::parse(&"a".repeat(253)).unwrap();
        assert!(list.push(&longest).is_ok());
        assert_eq!(list.iter().last(), Some(longest));
        assert_eq!(list.len(), want.len() + 1);
        assert!(!list.is_empty() && DomainList::new().is_empty());
    }
}
