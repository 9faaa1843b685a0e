//! Mail addresses as Postfix treats them: `local@domain` split at the last `@`, the
//! local part compared as written (after lower-casing where the caller says so), the
//! domain case-insensitively, and a recipient delimiter (`recipient_delimiter`, `+` by
//! default): `bob+lists@example.com` is `bob@example.com` with the extension `lists`.

/// Postfix `recipient_delimiter`: `None` when extensions are off.
pub type Delimiter = Option<char>;

/// `local@domain`, borrowed from the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    local: &'a str,
    domain: &'a str,
}

impl<'a> Address<'a> {
    /// Splits at the last `@` (a quoted local part may hold one); `None` for a bare local
    /// part such as `postmaster`. Nothing else is checked.
    pub fn parse(s: &'a str) -> Option<Address<'a>> {
        let (local, domain) = s.rsplit_once('@')?;
        Some(Address { local, domain })
    }

    /// A bare local part qualified with `domain`.
    pub fn new(local: &'a str, domain: &'a str) -> Address<'a> {
        Address { local, domain }
    }

    /// The local part, extension included.
    pub fn local(&self) -> &'a str {
        self.local
    }

    /// The domain as written; compare it with [`Address::has_domain`].
    pub fn domain(&self) -> &'a str {
        self.domain
    }

    /// The local part without its `+extension`. As Postfix's `split_addr`, a local part
    /// that starts with the delimiter is not split: `+x` stays `+x`.
    pub fn base(&self, delimiter: Delimiter) -> &'a str {
        self.split(delimiter).0
    }

    /// What follows the delimiter, when [`Address::base`] split it off.
    pub fn extension(&self, delimiter: Delimiter) -> Option<&'a str> {
        self.split(delimiter).1
    }

    fn split(&self, delimiter: Delimiter) -> (&'a str, Option<&'a str>) {
        match delimiter.and_then(|d| self.local.split_once(d)) {
            Some((base, extension)) if !base.is_empty() => (base, Some(extension)),
            _ => (self.local, None),
        }
    }

    /// Domains are case-insensitive (ASCII; internationalized names come as written).
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domain.eq_ignore_ascii_case(domain)
    }

    /// `base@domain`: the address with its extension removed.
    pub fn without_extension(&self, delimiter: Delimiter) -> String {
        format!("{}@{}", self.base(delimiter), self.domain)
    }
}

/// The primary domain: the first of the local domains, which bare local parts (`RCPT
/// TO:<postmaster>`, logins without `@`) belong to and the default postmaster lives at.
pub fn primary_domain(domains: &[String]) -> Option<&str> {
    domains.first().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUS: Delimiter = Some('+');

    #[test]
    fn splits_at_the_last_at() {
        let a = Address::parse("bob@example.com").unwrap();
        assert_eq!((a.local(), a.domain()), ("bob", "example.com"));
        let quoted = Address::parse("\"a@b\"@example.com").unwrap();
        assert_eq!(
            (quoted.local(), quoted.domain()),
            ("\"a@b\"", "example.com")
        );
        let empty = Address::parse("@example.com").unwrap();
        assert_eq!((empty.local(), empty.domain()), ("", "example.com"));
        assert_eq!(Address::parse("postmaster"), None);
        assert_eq!(Address::parse(""), None);
    }

    #[test]
    fn extension_after_the_first_delimiter() {
        let a = Address::parse("bob+lists+x@example.com").unwrap();
        assert_eq!((a.base(PLUS), a.extension(PLUS)), ("bob", Some("lists+x")));
        assert_eq!(a.without_extension(PLUS), "bob@example.com");
        let empty = Address::parse("bob+@example.com").unwrap();
        assert_eq!((empty.base(PLUS), empty.extension(PLUS)), ("bob", Some("")));
        let plain = Address::parse("bob@example.com").unwrap();
        assert_eq!((plain.base(PLUS), plain.extension(PLUS)), ("bob", None));
        assert_eq!(plain.without_extension(PLUS), "bob@example.com");
    }

    #[test]
    fn a_leading_delimiter_is_not_split() {
        let a = Address::parse("+x@example.com").unwrap();
        assert_eq!((a.base(PLUS), a.extension(PLUS)), ("+x", None));
        assert_eq!(a.without_extension(PLUS), "+x@example.com");
    }

    #[test]
    fn another_delimiter_or_none() {
        let a = Address::parse("bob-lists+x@example.com").unwrap();
        assert_eq!(
            (a.base(Some('-')), a.extension(Some('-'))),
            ("bob", Some("lists+x"))
        );
        assert_eq!((a.base(None), a.extension(None)), ("bob-lists+x", None));
    }

    #[test]
    fn domain_compares_without_case() {
        let a = Address::parse("Bob@Example.COM").unwrap();
        assert!(a.has_domain("example.com"));
        assert!(a.has_domain("EXAMPLE.com"));
        assert!(!a.has_domain("example.net"));
        assert!(!a.has_domain("example.com."));
        // The local part keeps its case: only the domain is case-insensitive.
        assert_eq!(a.local(), "Bob");
    }

    #[test]
    fn primary_domain_is_the_first() {
        let domains = ["example.com".to_string(), "example.net".to_string()];
        assert_eq!(primary_domain(&domains), Some("example.com"));
        assert_eq!(primary_domain(&[]), None);
    }
}
