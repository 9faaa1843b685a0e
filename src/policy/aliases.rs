//! Aliases, as Postfix's `virtual_alias_maps`: an address, or `@domain` for every
//! address of a domain, maps to one or more addresses, local users or elsewhere.
//!
//! Lookup order for `bob+tag@example.com`: the address, then `bob@example.com` (the
//! extension is carried over to each target, `propagate_unmatched_extensions`), then,
//! unless `bob` is a user (users are never swallowed by a catch-all), `@example.com`.
//! Targets are expanded again, up to [`MAX_DEPTH`] levels; a target equal to the address
//! it came from is final (`bob@ bob@, archive@` keeps bob). Duplicates are dropped.
//!
//! File format: see `table.rs`; a target without `@` is a user at the key's domain, as
//! in `/etc/aliases`. Pipes, files and `:include:` are not supported.

use std::collections::HashMap;

use anyhow::bail;

use super::table;
use crate::mail::{Address, Delimiter};

/// Postfix's `virtual_alias_recursion_limit` is 100; real alias chains are short.
pub const MAX_DEPTH: usize = 20;
/// Postfix `virtual_alias_expansion_limit`.
pub const MAX_ADDRESSES: usize = 1000;

#[derive(Debug, Default)]
pub struct AliasTable {
    /// Lowercased address → targets.
    exact: HashMap<String, Vec<String>>,
    /// Lowercased domain → targets.
    catch_all: HashMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpandError {
    #[error("alias loop: {}", .0.join(" -> "))]
    Loop(Vec<String>),
    #[error("aliases nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("aliases expand to more than {MAX_ADDRESSES} addresses")]
    TooMany,
}

/// How an expansion asks about the rest of the world.
pub struct Lookup<'a> {
    pub delimiter: Delimiter,
    /// Whether an address (without extension) is a user's, which a catch-all skips.
    pub is_user: &'a dyn Fn(&str) -> bool,
}

impl AliasTable {
    /// Parses an alias file; a bad line, or a loop among its addresses, is an error
    /// naming the line.
    pub fn parse(text: &str) -> anyhow::Result<AliasTable> {
        let mut table = AliasTable::default();
        let mut lines = Vec::new();
        for entry in table::parse(text)? {
            let Some(address) = Address::parse(&entry.key) else {
                bail!("line {}: {:?} is not an address", entry.line, entry.key);
            };
            let mut targets = Vec::with_capacity(entry.values.len());
            for value in &entry.values {
                if value.starts_with(['|', '/', ':']) {
                    bail!(
                        "line {}: {value:?}: pipes, files and :include: are not supported",
                        entry.line
                    );
                }
                let target = match Address::parse(value) {
                    Some(a) if !a.local().is_empty() && !a.domain().is_empty() => value.clone(),
                    Some(_) => bail!("line {}: {value:?} is not an address", entry.line),
                    None => format!("{value}@{}", address.domain()),
                };
                targets.push(target);
            }
            let map = match address.local() {
                "" => &mut table.catch_all,
                _ => &mut table.exact,
            };
            let key = match address.local() {
                "" => address.domain().to_ascii_lowercase(),
                _ => entry.key.clone(),
            };
            map.entry(key).or_default().extend(targets);
            lines.push((entry.line, entry.key));
        }
        // Loops among exact entries are there whoever the users are: refuse the file.
        let static_lookup = Lookup {
            delimiter: None,
            is_user: &|_| true,
        };
        for (line, key) in lines.iter().filter(|(_, k)| !k.starts_with('@')) {
            if let Err(err) = table.expand(key, &static_lookup) {
                bail!("line {line}: {err}");
            }
        }
        Ok(table)
    }

    /// Whether `address` has an entry of its own (with or without its extension), which
    /// wins over the reserved names and the catch-all.
    pub fn has_entry(&self, address: &str, delimiter: Delimiter) -> bool {
        Address::parse(address).is_some_and(|a| {
            self.exact.contains_key(&address.to_ascii_lowercase())
                || self
                    .exact
                    .contains_key(&a.without_extension(delimiter).to_ascii_lowercase())
        })
    }

    /// The targets `address` maps to directly (one level), or `None` without an alias.
    pub fn lookup(&self, address: &str, how: &Lookup<'_>) -> Option<Vec<String>> {
        let parsed = Address::parse(address)?;
        if let Some(targets) = self.exact.get(&address.to_ascii_lowercase()) {
            return Some(targets.clone());
        }
        let base = parsed.without_extension(how.delimiter);
        if let (Some(targets), Some(extension), Some(delimiter)) = (
            self.exact.get(&base.to_ascii_lowercase()),
            parsed.extension(how.delimiter),
            how.delimiter,
        ) {
            return Some(
                targets
                    .iter()
                    .map(|t| with_extension(t, delimiter, extension))
                    .collect(),
            );
        }
        if (how.is_user)(&base) {
            return None;
        }
        self.catch_all
            .get(&parsed.domain().to_ascii_lowercase())
            .cloned()
    }

    /// Every final address `address` expands to, or `None` when it is no alias.
    pub fn expand(
        &self,
        address: &str,
        how: &Lookup<'_>,
    ) -> Result<Option<Vec<String>>, ExpandError> {
        if self.lookup(address, how).is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.expand_into(address, how, &mut Vec::new(), &mut out)?;
        Ok(Some(out))
    }

    fn expand_into(
        &self,
        address: &str,
        how: &Lookup<'_>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), ExpandError> {
        let Some(targets) = self.lookup(address, how) else {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(address)) {
                out.push(address.to_string());
            }
            return Ok(());
        };
        if path.len() >= MAX_DEPTH {
            return Err(ExpandError::TooDeep);
        }
        path.push(address.to_ascii_lowercase());
        for target in targets {
            if target.eq_ignore_ascii_case(address) {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&target)) {
                    out.push(target);
                }
                continue;
            }
            if path.iter().any(|p| p.eq_ignore_ascii_case(&target)) {
                let mut cycle = path.clone();
                cycle.push(target.to_ascii_lowercase());
                return Err(ExpandError::Loop(cycle));
            }
            self.expand_into(&target, how, path, out)?;
            if out.len() > MAX_ADDRESSES {
                return Err(ExpandError::TooMany);
            }
        }
        path.pop();
        Ok(())
    }
}

/// `bob@example.com` with extension `tag` → `bob+tag@example.com`; a target that has an
/// extension already keeps it.
fn with_extension(target: &str, delimiter: char, extension: &str) -> String {
    match Address::parse(target) {
        Some(a) if a.extension(Some(delimiter)).is_none() => {
            format!("{}{delimiter}{extension}@{}", a.local(), a.domain())
        }
        _ => target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: [&str; 3] = ["alice@example.com", "bob@example.com", "carol@example.org"];

    fn is_user(address: &str) -> bool {
        USERS.iter().any(|u| u.eq_ignore_ascii_case(address))
    }

    fn expand(table: &AliasTable, address: &str) -> Option<Vec<String>> {
        let how = Lookup {
            delimiter: Some('+'),
            is_user: &is_user,
        };
        table.expand(address, &how).unwrap()
    }

    const FILE: &str = "
# people
info@example.com     alice@example.com, bob@example.com
Sales@Example.com:   info, carol@example.org, alice@example.com
team@example.com     sales@example.com
    dave@elsewhere.net
@example.com         catchall@example.com
catchall@example.com alice@example.com
boss@example.com     boss@example.com, alice@example.com
@example.org         alice@example.com
";

    #[test]
    fn expands_recursively_without_duplicates() {
        let t = AliasTable::parse(FILE).unwrap();
        assert_eq!(
            expand(&t, "info@example.com").unwrap(),
            ["alice@example.com", "bob@example.com"]
        );
        assert_eq!(
            expand(&t, "TEAM@example.com").unwrap(),
            [
                "alice@example.com",
                "bob@example.com",
                "carol@example.org",
                "dave@elsewhere.net"
            ]
        );
        assert_eq!(expand(&t, "alice@example.com"), None, "a user, no alias");
        assert_eq!(expand(&t, "nobody@example.net"), None);
    }

    #[test]
    fn catch_all_takes_what_no_entry_and_no_user_takes() {
        let t = AliasTable::parse(FILE).unwrap();
        assert_eq!(
            expand(&t, "random@example.com").unwrap(),
            ["alice@example.com"]
        );
        assert_eq!(
            expand(&t, "bob@example.com"),
            None,
            "users beat the catch-all"
        );
        assert_eq!(
            expand(&t, "carol@example.org"),
            None,
            "a user of the other domain"
        );
        assert_eq!(expand(&t, "x@example.org").unwrap(), ["alice@example.com"]);
        assert!(t.has_entry("info+x@example.com", Some('+')));
        assert!(!t.has_entry("random@example.com", Some('+')));
    }

    #[test]
    fn extension_carries_over_and_self_reference_is_final() {
        let t = AliasTable::parse(FILE).unwrap();
        assert_eq!(
            expand(&t, "info+news@example.com").unwrap(),
            ["alice+news@example.com", "bob+news@example.com"]
        );
        assert_eq!(
            expand(&t, "boss@example.com").unwrap(),
            ["boss@example.com", "alice@example.com"]
        );
        // A target with an extension of its own keeps it.
        let t = AliasTable::parse("list@example.com bob+lists@example.com, carol@example.org\n")
            .unwrap();
        assert_eq!(
            expand(&t, "list+x@example.com").unwrap(),
            ["bob+lists@example.com", "carol+x@example.org"]
        );
    }

    #[test]
    fn expansion_holds_at_most_max_addresses() {
        let entry = |n: usize| {
            let targets: Vec<String> = (0..n).map(|i| format!("u{i}@x.example")).collect();
            format!("all@x.example {}\n", targets.join(", "))
        };
        let t = AliasTable::parse(&entry(MAX_ADDRESSES)).unwrap();
        let how = Lookup {
            delimiter: Some('+'),
            is_user: &|_| false,
        };
        let all = t.expand("all@x.example", &how).unwrap().unwrap();
        assert_eq!(all.len(), MAX_ADDRESSES);
        let err = AliasTable::parse(&entry(MAX_ADDRESSES + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: aliases expand to more than 1000 addresses"
        );
    }

    #[test]
    fn loops_and_depth() {
        let err =
            AliasTable::parse("a@x.example b@x.example\nb@x.example c@x.example, a@x.example\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: alias loop: a@x.example -> b@x.example -> a@x.example"
        );
        let chain: String = (0..=MAX_DEPTH)
            .map(|i| format!("a{i}@x.example a{}@x.example\n", i + 1))
            .collect();
        let err = AliasTable::parse(&chain).unwrap_err();
        assert!(err.to_string().contains("deeper than 20"), "{err}");
        // A loop only through catch-alls shows at expansion time.
        let t = AliasTable::parse("@a.example x@b.example\n@b.example y@a.example\n").unwrap();
        let how = Lookup {
            delimiter: Some('+'),
            is_user: &|_| false,
        };
        assert!(matches!(
            t.expand("q@a.example", &how),
            Err(ExpandError::Loop(_))
        ));
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, expected) in [
            ("a@example.com b@example.com\nnokey\n", "line 2:"),
            ("a@example.com |/bin/sh\n", "line 1: \"|/bin/sh\": pipes"),
            ("\n\nroot alice@example.com\n", "line 3: key \"root\""),
            (
                "a@example.com @example.com\n",
                "line 1: \"@example.com\" is not an address",
            ),
        ] {
            let err = AliasTable::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }
}
