//! `spec.aliases`: aliases like Postfix's `virtual_alias_maps`, the recipient delimiter,
//! where `abuse@` goes and SRS for forwarded mail (README: Aliases). Rendered into the
//! ConfigMap as the alias file and into the server config's addressing keys.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::OBJECT_NAME_PATTERN;
use super::validate::{Problems, check_object_name};
use crate::mail::name::check_address;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasesSpec {
    /// Each address, or `@domain` for a catch-all (which never takes a user's mail), and
    /// where its mail goes: local users or outside addresses, expanded recursively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<Alias>,

    /// Postfix `recipient_delimiter`: mail for `alice+tag@` goes to alice, who may also
    /// send as it. Empty turns extensions off.
    #[serde(default = "default_delimiter")]
    #[schemars(length(max = 1))]
    pub recipient_delimiter: String,

    /// A login may send as the aliases that name it as a target.
    #[serde(default = "default_true")]
    pub send_as_alias: bool,

    /// Where mail to `abuse@<each domain>` goes unless an entry names it. Defaults to
    /// the postmaster address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub abuse: Option<String>,

    /// A Secret whose key `secret` holds the SRS key: mail forwarded to other domains
    /// then leaves with its sender rewritten (SRS0 at the first domain), so SPF passes.
    /// Unset: senders are never rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub srs_secret: Option<String>,
}

/// One alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    /// e.g. info@example.com, or @example.com for every address without a user or entry.
    #[schemars(length(min = 2))]
    pub address: String,
    /// Full addresses mail for it goes to.
    #[schemars(length(min = 1), inner(length(min = 3)))]
    pub to: Vec<String>,
}

impl Default for AliasesSpec {
    fn default() -> Self {
        AliasesSpec {
            entries: Vec::new(),
            recipient_delimiter: default_delimiter(),
            send_as_alias: true,
            abuse: None,
            srs_secret: None,
        }
    }
}

fn default_delimiter() -> String {
    "+".into()
}

fn default_true() -> bool {
    true
}

impl AliasesSpec {
    /// The alias file: `address  target, target` per line.
    pub fn file(&self) -> String {
        self.entries
            .iter()
            .map(|alias| format!("{} {}\n", alias.address, alias.to.join(", ")))
            .collect()
    }

    pub(super) fn validate(&self, p: &mut Problems) {
        let mut seen = BTreeSet::new();
        for (i, alias) in self.entries.iter().enumerate() {
            let path = format!("spec.aliases.entries[{i}]");
            let key = match alias.address.strip_prefix('@') {
                Some(domain) => check_address(&format!("catch-all@{domain}")),
                None => check_address(&alias.address),
            };
            p.check(format_args!("{path}.address"), key);
            if !seen.insert(alias.address.to_ascii_lowercase()) {
                p.push(format_args!("{path}.address"), "listed twice");
            }
            if alias.to.is_empty() {
                p.push(format_args!("{path}.to"), "names no address");
            }
            for (j, target) in alias.to.iter().enumerate() {
                p.check(format_args!("{path}.to[{j}]"), check_address(target));
            }
        }
        let delimiter = &self.recipient_delimiter;
        if delimiter.chars().count() > 1
            || delimiter.contains(|c: char| c.is_alphanumeric() || c == '@' || c.is_whitespace())
        {
            p.push(
                "spec.aliases.recipientDelimiter",
                "must be one punctuation character, or empty",
            );
        }
        if let Some(abuse) = &self.abuse {
            p.check("spec.aliases.abuse", check_address(abuse));
        }
        if let Some(secret) = &self.srs_secret {
            p.check("spec.aliases.srsSecret", check_object_name(secret));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_validation() {
        let spec: AliasesSpec = serde_saphyr::from_str(
            "entries:\n- {address: info@example.com, to: [alice@example.com, bob@example.net]}\n\
             - {address: '@example.com', to: [alice@example.com]}\n",
        )
        .unwrap();
        assert_eq!(
            spec.file(),
            "info@example.com alice@example.com, bob@example.net\n@example.com alice@example.com\n"
        );
        assert_eq!(spec.recipient_delimiter, "+");
        assert!(spec.send_as_alias);
        let mut p = Problems::default();
        spec.validate(&mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);

        let bad = AliasesSpec {
            entries: vec![
                Alias {
                    address: "info".into(),
                    to: vec![],
                },
                Alias {
                    address: "Info".into(),
                    to: vec!["a\r\nb@example.com".into()],
                },
            ],
            recipient_delimiter: "++".into(),
            srs_secret: Some("Bad_Name".into()),
            ..AliasesSpec::default()
        };
        let mut p = Problems::default();
        bad.validate(&mut p);
        let paths: Vec<&str> = p.0.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "spec.aliases.entries[0].address",
                "spec.aliases.entries[0].to",
                "spec.aliases.entries[1].address",
                "spec.aliases.entries[1].address",
                "spec.aliases.entries[1].to[0]",
                "spec.aliases.recipientDelimiter",
                "spec.aliases.srsSecret",
            ]
        );
    }
}
