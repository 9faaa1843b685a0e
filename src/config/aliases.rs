//! Addressing keys of the server config: the recipient delimiter, where `abuse@` goes,
//! the alias file and SRS for mail forwarded to other domains (README: Aliases).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::Config;
use crate::mail::srs::Srs;
use crate::mail::{self, Delimiter};
use crate::reload::{self, Watched};

/// `aliases:`, Postfix `virtual_alias_maps` plus `smtpd_sender_login_maps` on the same
/// file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AliasesConfig {
    /// `address  target, target...` per line, `@domain` for a catch-all; reloaded on
    /// change. Unset: no aliases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A login may use as sender the aliases that name it as a target.
    pub send_as_alias: bool,
}

impl Default for AliasesConfig {
    fn default() -> Self {
        AliasesConfig {
            file: None,
            send_as_alias: true,
        }
    }
}

impl AliasesConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == AliasesConfig::default()
    }
}

/// Sender Rewriting Scheme for mail that leaves with a sender of another domain (an
/// alias forwarding outside): `SRS0=hash=time=domain=local@<domain>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SrsConfig {
    /// The HMAC key: the file's content, without surrounding whitespace.
    pub secret_file: PathBuf,
    /// The domain rewritten senders are at; one of `domains`. Unset: the first domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// How long a bounce to a rewritten address is accepted (at most 1023 days).
    #[serde(default = "default_srs_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl SrsConfig {
    /// The key in `secret_file`, the first domain, the default maximum age.
    pub fn new(secret_file: PathBuf) -> SrsConfig {
        SrsConfig {
            secret_file,
            domain: None,
            max_age: default_srs_max_age(),
        }
    }
}

fn default_srs_max_age() -> Duration {
    Duration::from_secs(21 * 24 * 3600)
}

pub(super) fn default_delimiter() -> String {
    "+".into()
}

pub(super) fn is_default_delimiter(delimiter: &String) -> bool {
    *delimiter == default_delimiter()
}

impl Config {
    /// `recipientDelimiter` as a character; validated to be at most one.
    pub fn delimiter(&self) -> Delimiter {
        self.recipient_delimiter.chars().next()
    }

    /// Where mail for `abuse@<local domain>` goes: `abuse`, else the postmaster address.
    pub fn abuse(&self) -> Option<String> {
        self.abuse.clone().or_else(|| self.postmaster())
    }

    /// The domain SRS addresses are at, when SRS is on.
    pub fn srs_domain(&self) -> Option<String> {
        let srs = self.srs.as_ref()?;
        srs.domain
            .clone()
            .or_else(|| mail::primary_domain(&self.domains).map(String::from))
    }

    /// The SRS codec with its secret, reloaded when the file changes; none without `srs`.
    pub fn watch_srs(&self) -> anyhow::Result<Option<Arc<Watched<Srs>>>> {
        let (Some(srs), Some(domain)) = (self.srs.clone(), self.srs_domain()) else {
            return Ok(None);
        };
        let path = srs.secret_file.clone();
        let watched = reload::watch_file("SRS secret", &path, self.reload_interval, move |p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the SRS secret {}", p.display()))?;
            if text.trim().is_empty() {
                bail!("the SRS secret {} is empty", p.display());
            }
            Ok(Srs::new(text.trim().as_bytes(), &domain, srs.max_age))
        })?;
        Ok(Some(watched))
    }

    pub(super) fn validate_addressing(&self) -> anyhow::Result<()> {
        let delimiter = &self.recipient_delimiter;
        if delimiter.chars().count() > 1
            || delimiter.contains(|c: char| c.is_alphanumeric() || c == '@' || c.is_whitespace())
        {
            bail!("recipientDelimiter: {delimiter:?} must be one punctuation character, or empty");
        }
        if let Some(srs) = &self.srs {
            let Some(domain) = self.srs_domain() else {
                bail!("srs: needs srs.domain or domains");
            };
            if !self.domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)) {
                bail!(
                    "srs.domain: {domain:?} is not one of domains, so bounces to it would not be taken"
                );
            }
            if srs.max_age.is_zero() || srs.max_age > Duration::from_secs(1023 * 24 * 3600) {
                bail!("srs.maxAge: must be between 1 day and 1023 days");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MINIMAL;

    #[test]
    fn defaults_and_settings() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.delimiter(), Some('+'));
        assert_eq!(c.aliases, AliasesConfig::default());
        assert!(c.aliases.send_as_alias);
        assert_eq!(c.abuse(), c.postmaster());
        assert_eq!(c.srs_domain(), None);
        let text = format!(
            "{MINIMAL}recipientDelimiter: ''\nabuse: abuse-desk@example.net\n\
             aliases: {{file: /etc/aliases, sendAsAlias: false}}\nsrs: {{secretFile: /srs/secret}}\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.delimiter(), None);
        assert_eq!(c.abuse().as_deref(), Some("abuse-desk@example.net"));
        assert!(!c.aliases.send_as_alias);
        assert_eq!(
            c.srs_domain().as_deref(),
            c.domains.first().map(String::as_str)
        );
        assert_eq!(c.srs.as_ref().unwrap().max_age, default_srs_max_age());
        let again: Config = serde_saphyr::from_str(&c.to_yaml().unwrap()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (text, key) in [
            ("recipientDelimiter: '+-'\n", "recipientDelimiter"),
            ("recipientDelimiter: a\n", "recipientDelimiter"),
            (
                "srs: {secretFile: /s, domain: other.example}\n",
                "srs.domain",
            ),
            ("srs: {secretFile: /s, maxAge: 2000days}\n", "srs.maxAge"),
            ("abuse: 'a\\r\\nb@example.com'\n", "abuse"),
        ] {
            let err = Config::parse(&format!("{MINIMAL}{text}")).unwrap_err();
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
    }
}
