//! Dovecot password schemes: `{SCHEME}hash` text as found in a passwd-file and as
//! written by `doveadm pw`.
//!
//! A stored password is parsed once, when the user file is loaded, into a [`StoredHash`]
//! so that a broken entry is reported at load time and a login only runs the hash.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail};
use argon2::Argon2;
use sha_crypt::{PasswordHasher, PasswordVerifier, ShaCrypt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Schemes `hash_password` can write. Verification accepts these and also `{CRYPT}`
/// (crypt(3) text, dispatched on its `$id$` prefix) and `{PLAIN}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme {
    Sha512Crypt,
    Sha256Crypt,
    BlfCrypt,
    #[default]
    Argon2id,
    Argon2i,
}

impl Scheme {
    pub const ALL: [Scheme; 5] = [
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::BlfCrypt,
        Scheme::Argon2id,
        Scheme::Argon2i,
    ];

    /// The name inside the braces, as Dovecot spells it.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown password scheme {0:?}; expected one of SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, ARGON2I"
)]
pub struct UnknownScheme(String);

impl FromStr for Scheme {
    type Err = UnknownScheme;

    /// Case-insensitive; braces are optional (`sha512-crypt`, `{ARGON2ID}`).
    fn from_str(s: &str) -> Result<Scheme, UnknownScheme> {
        let bare = s
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(s);
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.name().eq_ignore_ascii_case(bare))
            .ok_or_else(|| UnknownScheme(s.to_owned()))
    }
}

/// Why a stored password cannot be used. Never contains the hash itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("unknown password scheme {{{0}}}")]
    UnknownScheme(String),
    #[error("unsupported crypt(3) format {0}")]
    UnsupportedCrypt(String),
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    #[error("{{PLAIN}} passwords are refused (auth.allowPlaintext is off)")]
    PlaintextNotAllowed,
}

/// A password entry, parsed and checked for well-formedness.
#[derive(Clone)]
pub enum StoredHash {
    /// `$5$` or `$6$` (SHA256-CRYPT, SHA512-CRYPT), optionally with `rounds=N`.
    ShaCrypt(String),
    /// `$2y$`, `$2b$`, `$2a$` (BLF-CRYPT).
    Bcrypt(String),
    /// PHC string `$argon2id$...` or `$argon2i$...`.
    Argon2(Box<argon2::PasswordHash>),
    Plain(Vec<u8>),
}

// Hashes are secrets too (offline cracking): only the kind is shown.
impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            StoredHash::ShaCrypt(_) => "ShaCrypt",
            StoredHash::Bcrypt(_) => "Bcrypt",
            StoredHash::Argon2(_) => "Argon2",
            StoredHash::Plain(_) => "Plain",
        };
        write!(f, "StoredHash::{kind}(<redacted>)")
    }
}

impl StoredHash {
    /// Parses the password field of a passwd-file line. Without a `{SCHEME}` prefix the
    /// text is crypt(3) output, as with Dovecot's passwd-file default scheme `CRYPT`.
    pub fn parse(stored: &str, allow_plaintext: bool) -> Result<StoredHash, HashError> {
        let (scheme, text) = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
            Some(split) => split,
            None => ("CRYPT", stored),
        };
        let is = |name: &str| scheme.eq_ignore_ascii_case(name);
        if is("CRYPT") || is("SHA512-CRYPT") || is("SHA256-CRYPT") || is("BLF-CRYPT") {
            // Dovecot hands all of these to crypt(3), which goes by the `$id$` prefix.
            parse_crypt(text)
        } else if is("ARGON2ID") || is("ARGON2I") {
            parse_argon2(text)
        } else if is("PLAIN") || is("CLEARTEXT") {
            if allow_plaintext {
                Ok(StoredHash::Plain(text.as_bytes().to_vec()))
            } else {
                Err(HashError::PlaintextNotAllowed)
            }
        } else {
            Err(HashError::UnknownScheme(scheme.to_owned()))
        }
    }

    /// Runs the scheme's hash over `password` and compares in constant time. CPU-heavy
    /// (Argon2id at Dovecot's parameters: ~200 ms, 64 MiB): call from a blocking thread.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::ShaCrypt(hash) => ShaCrypt::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
            StoredHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            // The crate compares the outputs with `subtle`.
            StoredHash::Argon2(hash) => Argon2::default()
                .verify_password(password, hash.as_ref())
                .is_ok(),
            // Comparing digests hides the length as well as the content.
            StoredHash::Plain(expected) => Sha256::digest(expected)
                .as_slice()
                .ct_eq(Sha256::digest(password).as_slice())
                .into(),
        }
    }
}

fn parse_crypt(text: &str) -> Result<StoredHash, HashError> {
    if text.starts_with("$2") {
        let parts =
            bcrypt::HashParts::from_str(text).map_err(|_| HashError::Malformed("bcrypt"))?;
        // `$2x$` marks hashes made by the buggy pre-2011 implementation.
        if text.starts_with("$2x$") || !(4..=31).contains(&parts.get_cost()) {
            return Err(HashError::Malformed("bcrypt"));
        }
        Ok(StoredHash::Bcrypt(text.to_owned()))
    } else if let Some(rest) = text.strip_prefix("$6$") {
        check_sha_crypt(rest, 86, "SHA512-CRYPT")?;
        Ok(StoredHash::ShaCrypt(text.to_owned()))
    } else if let Some(rest) = text.strip_prefix("$5$") {
        check_sha_crypt(rest, 43, "SHA256-CRYPT")?;
        Ok(StoredHash::ShaCrypt(text.to_owned()))
    } else {
        // The `$id$` prefix names the algorithm (`$y$` yescrypt, `$1$` MD5): not secret.
        let id = match text.strip_prefix('$').and_then(|s| s.split_once('$')) {
            Some((id, _)) if id.len() <= 8 => format!("${id}$"),
            _ => "(traditional DES or unknown)".to_owned(),
        };
        Err(HashError::UnsupportedCrypt(id))
    }
}

/// `[rounds=N$]salt$hash` after the `$5$`/`$6$` prefix.
fn check_sha_crypt(rest: &str, hash_len: usize, what: &'static str) -> Result<(), HashError> {
    let malformed = HashError::Malformed(what);
    let mut fields = rest.split('$');
    let mut salt = fields.next().ok_or(HashError::Malformed(what))?;
    if salt.starts_with("rounds=") {
        // glibc clamps out-of-range rounds, sha-crypt refuses them: refuse at load time
        // rather than fail every login.
        sha_crypt::Params::from_str(salt).map_err(|_| HashError::Malformed(what))?;
        salt = fields.next().ok_or(HashError::Malformed(what))?;
    }
    let hash = fields.next().ok_or(HashError::Malformed(what))?;
    let crypt_alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    if salt.is_empty()
        || fields.next().is_some()
        || hash.len() != hash_len
        || !hash.bytes().all(crypt_alphabet)
    {
        return Err(malformed);
    }
    Ok(())
}

fn parse_argon2(text: &str) -> Result<StoredHash, HashError> {
    let hash = argon2::PasswordHash::new(text).map_err(|_| HashError::Malformed("Argon2"))?;
    let algorithm = hash.algorithm.as_str();
    if (algorithm != "argon2id" && algorithm != "argon2i")
        || hash.salt.is_none()
        || hash.hash.is_none()
        || argon2::Params::try_from(&hash).is_err()
    {
        return Err(HashError::Malformed("Argon2"));
    }
    Ok(StoredHash::Argon2(Box::new(hash)))
}

/// Verifies `password` against `{SCHEME}hash` text (`{PLAIN}` included: the plaintext
/// policy is the user database's business).
#[cfg(test)]
fn verify(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    Ok(StoredHash::parse(stored, true)?.verify(password))
}

/// Cost of new BLF-CRYPT hashes. `doveadm pw` still writes cost 5, which is cheap to
/// crack today; 10 takes ~70 ms here, below Argon2id's ~200 ms.
const BCRYPT_COST: u32 = 10;

/// Hashes `password` as `{SCHEME}...` text that Dovecot accepts, with the parameters
/// `doveadm pw` (2.3) uses: SHA-crypt 5000 rounds and a 16-character salt; Argon2id
/// m=65536,t=3,p=1 and Argon2i m=32768,t=4,p=1, 16-byte salt, 32-byte output.
pub fn hash_password(scheme: Scheme, password: &str) -> anyhow::Result<String> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    if password.contains('\0') {
        // crypt(3) stops at the first NUL, so Dovecot would check a different password.
        bail!("the password contains a NUL byte");
    }
    let hash = match scheme {
        Scheme::Sha512Crypt => sha_crypt_hash(sha_crypt::Algorithm::Sha512Crypt, password)?,
        Scheme::Sha256Crypt => sha_crypt_hash(sha_crypt::Algorithm::Sha256Crypt, password)?,
        Scheme::BlfCrypt => {
            if password.len() >= 72 {
                bail!("BLF-CRYPT uses only the first 72 bytes of a password; use ARGON2ID");
            }
            bcrypt::hash_with_salt(password, BCRYPT_COST, rand::random())?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Argon2id => argon2_hash(argon2::Algorithm::Argon2id, 65536, 3, password)?,
        Scheme::Argon2i => argon2_hash(argon2::Algorithm::Argon2i, 32768, 4, password)?,
    };
    Ok(format!("{{{}}}{hash}", scheme.name()))
}

fn sha_crypt_hash(algorithm: sha_crypt::Algorithm, password: &str) -> anyhow::Result<String> {
    // 12 random bytes encode to the 16-character maximum salt.
    let salt: [u8; 12] = rand::random();
    let hasher = ShaCrypt::new(algorithm, sha_crypt::Params::RECOMMENDED);
    let hash = hasher
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("SHA-crypt: {e}"))?
        .to_string();
    // The crate always writes `rounds=5000$`; glibc and doveadm leave the default out.
    let default_rounds = format!("${algorithm}$rounds=5000$");
    Ok(match hash.strip_prefix(&default_rounds) {
        Some(rest) => format!("${algorithm}${rest}"),
        None => hash,
    })
}

fn argon2_hash(
    algorithm: argon2::Algorithm,
    m_cost: u32,
    t_cost: u32,
    password: &str,
) -> anyhow::Result<String> {
    let params =
        argon2::Params::new(m_cost, t_cost, 1, Some(32)).map_err(|e| anyhow!("Argon2: {e}"))?;
    let salt: [u8; 16] = rand::random();
    let hash = Argon2::new(algorithm, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("Argon2: {e}"))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by `doveadm pw` 2.3.19 with the password "secret".
    const DOVEADM_SECRET: [&str; 5] = [
        "{SHA512-CRYPT}$6$cXOoeOaCiOmGuA3p$5xE.pXPXHC.8xodVUp719GMZ2kUpn8rGrZpzfgeESFZ79JM1UpLM9gtjoPlScm82WqS8Zch8XPRLjszk6FSNV/",
        "{SHA256-CRYPT}$5$jHxHz9FNYymkDW1t$2NXQANWGssljyr/q23gbgau1aRNYS5O6j7G2FYeBg43",
        "{BLF-CRYPT}$2y$05$yOoB6TNddPWpV6kHAgcLx.x9owcJZ6OriGqgA3GRwGnZWcwyjiDo.",
        "{CRYPT}$2y$05$TQ0f0NrBBNmz6aGHSoZ8PeXTNZk4Scy9rFypZx/MwdtFIv59SeyUi",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$kBZ8FY24L6Z/n4/MgqxUKQ$lsFlHqo6zn97zsJJ55c3d2/QI+OMEBFWef0NPBoDC2E",
    ];

    #[test]
    fn verifies_doveadm_hashes() {
        for stored in DOVEADM_SECRET {
            assert_eq!(verify(stored, b"secret"), Ok(true), "{stored}");
            assert_eq!(verify(stored, b"Secret"), Ok(false), "{stored}");
        }
    }

    #[test]
    fn scheme_names_parse_case_insensitively() {
        assert_eq!(
            "sha512-crypt".parse::<Scheme>().unwrap(),
            Scheme::Sha512Crypt
        );
        assert_eq!("{Argon2ID}".parse::<Scheme>().unwrap(), Scheme::Argon2id);
        assert_eq!("blf-crypt".parse::<Scheme>().unwrap(), Scheme::BlfCrypt);
        assert!("md5".parse::<Scheme>().is_err());
        for scheme in Scheme::ALL {
            assert_eq!(scheme.to_string().parse::<Scheme>().unwrap(), scheme);
        }
    }

    #[test]
    fn stored_scheme_is_case_insensitive_and_crypt_is_the_default() {
        let bare = "$6$cXOoeOaCiOmGuA3p$5xE.pXPXHC.8xodVUp719GMZ2kUpn8rGrZpzfgeESFZ79JM1UpLM9gtjoPlScm82WqS8Zch8XPRLjszk6FSNV/";
        assert_eq!(verify(bare, b"secret"), Ok(true));
        assert_eq!(
            verify(&format!("{{sha512-crypt}}{bare}"), b"secret"),
            Ok(true)
        );
        assert_eq!(verify(&format!("{{crypt}}{bare}"), b"secret"), Ok(true));
    }

    #[test]
    fn round_trips_every_scheme() {
        for scheme in Scheme::ALL {
            let stored = hash_password(scheme, "correct horse").unwrap();
            assert!(stored.starts_with(&format!("{{{scheme}}}$")), "{stored}");
            assert_eq!(verify(&stored, b"correct horse"), Ok(true), "{scheme}");
            assert_eq!(verify(&stored, b"correct horsE"), Ok(false), "{scheme}");
        }
    }

    #[test]
    fn hashes_in_doveadm_style() {
        let sha = hash_password(Scheme::Sha512Crypt, "pw").unwrap();
        let fields: Vec<&str> = sha.split('$').collect();
        assert_eq!(fields[..2], ["{SHA512-CRYPT}", "6"]);
        assert_eq!(fields[2].len(), 16, "salt, with no rounds= field: {sha}");
        let argon = hash_password(Scheme::Argon2id, "pw").unwrap();
        assert!(
            argon.starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
            "{argon}"
        );
        let bcrypt = hash_password(Scheme::BlfCrypt, "pw").unwrap();
        assert!(bcrypt.starts_with("{BLF-CRYPT}$2y$10$"), "{bcrypt}");
        assert_ne!(
            sha,
            hash_password(Scheme::Sha512Crypt, "pw").unwrap(),
            "salt is random"
        );
    }

    #[test]
    fn refuses_passwords_that_other_implementations_would_cut() {
        assert!(hash_password(Scheme::Sha512Crypt, "a\0b").is_err());
        assert!(hash_password(Scheme::BlfCrypt, &"x".repeat(72)).is_err());
        assert!(hash_password(Scheme::Argon2id, "").is_err());
    }

    #[test]
    fn plaintext_only_when_allowed() {
        assert_eq!(
            StoredHash::parse("{PLAIN}secret", false).unwrap_err(),
            HashError::PlaintextNotAllowed
        );
        let plain = StoredHash::parse("{plain}secret", true).unwrap();
        assert!(plain.verify(b"secret"));
        assert!(!plain.verify(b"secre"));
        assert!(!plain.verify(b"secret2"));
    }

    #[test]
    fn rejects_malformed_and_unsupported_hashes() {
        let cases = [
            ("{MD5}abc", HashError::UnknownScheme("MD5".into())),
            ("$1$salt$hash", HashError::UnsupportedCrypt("$1$".into())),
            (
                "$y$j9T$salt$hash",
                HashError::UnsupportedCrypt("$y$".into()),
            ),
            (
                "abJnggxhB/yWI",
                HashError::UnsupportedCrypt("(traditional DES or unknown)".into()),
            ),
            (
                "{SHA512-CRYPT}$6$salt$tooshort",
                HashError::Malformed("SHA512-CRYPT"),
            ),
            (
                "{SHA512-CRYPT}$6$rounds=10$salt$x",
                HashError::Malformed("SHA512-CRYPT"),
            ),
            ("{BLF-CRYPT}$2y$05$short", HashError::Malformed("bcrypt")),
            // Up to 8 characters name an algorithm; anything longer may be the hash.
            (
                "$abcdefgh$salt$hash",
                HashError::UnsupportedCrypt("$abcdefgh$".into()),
            ),
            (
                "$abcdefghi$salt$hash",
                HashError::UnsupportedCrypt("(traditional DES or unknown)".into()),
            ),
            (
                "{ARGON2ID}$argon2id$v=19$m=65536",
                HashError::Malformed("Argon2"),
            ),
            // A salt and parameters but no hash.
            (
                "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0c2FsdA",
                HashError::Malformed("Argon2"),
            ),
        ];
        for (stored, expected) in cases {
            assert_eq!(
                StoredHash::parse(stored, false).unwrap_err(),
                expected,
                "{stored}"
            );
        }
    }

    const BLF_SECRET: &str = "$2y$05$yOoB6TNddPWpV6kHAgcLx.x9owcJZ6OriGqgA3GRwGnZWcwyjiDo.";

    /// `$2a$`, `$2b$` and `$2y$` hash ASCII passwords alike. `$2x$` marks the buggy
    /// pre-2011 implementation, whose 8-bit handling the crate does not emulate (Dovecot's
    /// crypt_blowfish does): refused rather than verified wrongly.
    #[test]
    fn bcrypt_variants() {
        for id in ["2a", "2b", "2y"] {
            let stored = BLF_SECRET.replacen("2y", id, 1);
            assert_eq!(verify(&stored, b"secret"), Ok(true), "{stored}");
        }
        let twox = BLF_SECRET.replacen("2y", "2x", 1);
        assert_eq!(
            StoredHash::parse(&twox, false).unwrap_err(),
            HashError::Malformed("bcrypt")
        );
    }

    /// crypt_blowfish takes costs 04 to 31; the hash itself is well formed in every case.
    #[test]
    fn bcrypt_cost_range() {
        let with_cost = |cost: &str| BLF_SECRET.replacen("$05$", &format!("${cost}$"), 1);
        for cost in ["04", "31"] {
            assert!(StoredHash::parse(&with_cost(cost), false).is_ok(), "{cost}");
        }
        for cost in ["00", "03", "32", "99"] {
            assert_eq!(
                StoredHash::parse(&with_cost(cost), false).unwrap_err(),
                HashError::Malformed("bcrypt"),
                "{cost}"
            );
        }
    }

    /// Dovecot (libsodium) verifies argon2i and argon2id only; a well-formed argon2d hash
    /// is refused at load time.
    #[test]
    fn argon2d_is_refused() {
        let params = argon2::Params::new(8, 1, 1, Some(32)).unwrap();
        let hash_with = |algorithm| {
            Argon2::new(algorithm, argon2::Version::V0x13, params.clone())
                .hash_password_with_salt(b"secret", &[7u8; 16])
                .unwrap()
                .to_string()
        };
        let argon2d = hash_with(argon2::Algorithm::Argon2d);
        assert!(argon2d.starts_with("$argon2d$"), "{argon2d}");
        assert_eq!(
            StoredHash::parse(&format!("{{ARGON2ID}}{argon2d}"), false).unwrap_err(),
            HashError::Malformed("Argon2")
        );
        let argon2id = hash_with(argon2::Algorithm::Argon2id);
        assert_eq!(
            verify(&format!("{{ARGON2ID}}{argon2id}"), b"secret"),
            Ok(true)
        );
    }

    /// Only `rounds=` differs between the cases, so a refusal is the rounds check's.
    /// glibc clamps out-of-range rounds and writes the clamped value, so such a hash never
    /// matches there either; refusing it at load time says so once.
    #[test]
    fn sha_crypt_rounds_range() {
        let (salt, hash) = (
            "cXOoeOaCiOmGuA3p",
            "5xE.pXPXHC.8xodVUp719GMZ2kUpn8rGrZpzfgeESFZ79JM1UpLM9gtjoPlScm82WqS8Zch8XPRLjszk6FSNV/",
        );
        let with_rounds = |rounds: &str| format!("{{SHA512-CRYPT}}$6${rounds}{salt}${hash}");
        for rounds in ["", "rounds=1000$", "rounds=5000$", "rounds=999999999$"] {
            assert!(
                StoredHash::parse(&with_rounds(rounds), false).is_ok(),
                "{rounds}"
            );
        }
        for rounds in [
            "rounds=999$",
            "rounds=0$",
            "rounds=1000000000$",
            "rounds=x$",
            "rounds=$",
        ] {
            assert_eq!(
                StoredHash::parse(&with_rounds(rounds), false).unwrap_err(),
                HashError::Malformed("SHA512-CRYPT"),
                "{rounds}"
            );
        }
        assert_eq!(verify(&with_rounds("rounds=5000$"), b"secret"), Ok(true));
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let plain = StoredHash::parse("{PLAIN}hunter2", true).unwrap();
        assert!(!format!("{plain:?}").contains("hunter2"));
        let err = StoredHash::parse("{SHA512-CRYPT}$6$salt$tooshort", false).unwrap_err();
        assert!(!err.to_string().contains("tooshort"));
        assert_eq!(format!("{plain:?}"), "StoredHash::Plain(<redacted>)");
    }

    /// Each field of `$6$salt$hash` is checked on its own: a hash of the right length in
    /// the crypt alphabet does not excuse an empty salt or a field too many.
    #[test]
    fn sha_crypt_fields() {
        let hash = "5xE.pXPXHC.8xodVUp719GMZ2kUpn8rGrZpzfgeESFZ79JM1UpLM9gtjoPlScm82WqS8Zch8XPRLjszk6FSNV/";
        assert!(StoredHash::parse(&format!("$6$cXOoeOaCiOmGuA3p${hash}"), false).is_ok());
        let bad_char = hash.replacen('.', "*", 1);
        for stored in [
            format!("$6$${hash}"),
            format!("$6$cXOoeOaCiOmGuA3p${hash}$"),
            format!("$6$cXOoeOaCiOmGuA3p${bad_char}"),
        ] {
            assert_eq!(
                StoredHash::parse(&stored, false).unwrap_err(),
                HashError::Malformed("SHA512-CRYPT"),
                "{stored}"
            );
        }
    }

    /// Cross-checks with the real tools. CI installs them (dovecot-core, openssl, whois
    /// for mkpasswd), so a missing tool is a failure, not a skip.
    mod real_tools {
        use super::*;
        use std::process::{Command, Output};

        fn run(program: &str, args: &[&str]) -> Output {
            Command::new(program)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"))
        }

        fn stdout_of(program: &str, args: &[&str]) -> String {
            let out = run(program, args);
            assert!(
                out.status.success(),
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        }

        /// Letters first (a leading `-` would read as an option), then punctuation,
        /// spaces and non-ASCII, so quoting or encoding slips would show.
        fn random_password() -> String {
            const CHARS: &[char] = &[
                'a', 'B', 'c', 'D', 'e', '7', '0', ' ', '$', '{', '}', ':', '\'', '"', '\\', 'ä',
                '€', '#', '%',
            ];
            let mut password = String::from("Pw");
            for _ in 0..14 {
                password.push(CHARS[rand::random_range(0..CHARS.len())]);
            }
            password
        }

        /// A hash of a random password made by the tool must verify with that password
        /// and no other.
        fn check_tool_hash(program: &str, args: &[&str], expected_prefix: &str) {
            let password = random_password();
            let mut full_args = args.to_vec();
            full_args.push(&password);
            let stored = stdout_of(program, &full_args);
            assert!(
                stored.starts_with(expected_prefix),
                "{program} {args:?} wrote {stored}"
            );
            assert_eq!(
                verify(&stored, password.as_bytes()),
                Ok(true),
                "{program} {args:?}"
            );
            let wrong = format!("{password}x");
            assert_eq!(
                verify(&stored, wrong.as_bytes()),
                Ok(false),
                "{program} {args:?}"
            );
        }

        #[test]
        fn doveadm_sha512_crypt() {
            check_tool_hash(
                "doveadm",
                &["pw", "-s", "SHA512-CRYPT", "-p"],
                "{SHA512-CRYPT}$6$",
            );
        }

        #[test]
        fn doveadm_sha256_crypt() {
            check_tool_hash(
                "doveadm",
                &["pw", "-s", "SHA256-CRYPT", "-p"],
                "{SHA256-CRYPT}$5$",
            );
        }

        #[test]
        fn doveadm_blf_crypt() {
            check_tool_hash(
                "doveadm",
                &["pw", "-s", "BLF-CRYPT", "-p"],
                "{BLF-CRYPT}$2y$",
            );
        }

        #[test]
        fn doveadm_argon2id() {
            check_tool_hash(
                "doveadm",
                &["pw", "-s", "ARGON2ID", "-p"],
                "{ARGON2ID}$argon2id$",
            );
        }

        #[test]
        fn openssl_sha512_and_sha256() {
            check_tool_hash("openssl", &["passwd", "-6"], "$6$");
            check_tool_hash("openssl", &["passwd", "-5"], "$5$");
        }

        #[test]
        fn mkpasswd_sha512_with_and_without_rounds_and_bcrypt() {
            check_tool_hash("mkpasswd", &["-m", "sha-512"], "$6$");
            check_tool_hash(
                "mkpasswd",
                &["-m", "sha-512", "-R", "6000"],
                "$6$rounds=6000$",
            );
            check_tool_hash("mkpasswd", &["-m", "bcrypt"], "$2b$");
        }

        #[test]
        fn doveadm_accepts_our_hashes() {
            for scheme in Scheme::ALL {
                let password = random_password();
                let stored = hash_password(scheme, &password).unwrap();
                let right = run("doveadm", &["pw", "-t", &stored, "-p", &password]);
                assert!(
                    right.status.success(),
                    "doveadm rejected our {scheme} hash: {}",
                    String::from_utf8_lossy(&right.stderr)
                );
                let wrong = run(
                    "doveadm",
                    &["pw", "-t", &stored, "-p", &format!("{password}x")],
                );
                assert!(
                    !wrong.status.success(),
                    "doveadm accepted a wrong password for {scheme}"
                );
            }
        }
    }
}
