//! The text format of Postfix `hash:` source files, shared by the sender login map and
//! the alias file: one `key  value, value...` entry per line, `#` comments, a line
//! starting with whitespace continues the previous one.

use anyhow::bail;

pub struct Entry {
    /// Where the entry starts, counting from 1.
    pub line: usize,
    /// The key, lowercased (Postfix folds the case of `hash:` keys).
    pub key: String,
    pub values: Vec<String>,
}

/// The entries of `text`; an entry with no value, or a key that is neither an address
/// nor `@domain`, is an error naming its line.
pub fn parse(text: &str) -> anyhow::Result<Vec<Entry>> {
    // Join continuation lines first, remembering where each entry starts.
    let mut joined: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match joined.last_mut() {
                Some((_, entry)) => {
                    entry.push(' ');
                    entry.push_str(line.trim());
                }
                None => bail!("line {}: continuation line without an entry", n + 1),
            }
        } else {
            joined.push((n + 1, line.trim().to_string()));
        }
    }
    joined
        .into_iter()
        .map(|(line, entry)| {
            let (key, value) = entry
                .split_once(char::is_whitespace)
                .unwrap_or((&entry, ""));
            // `/etc/aliases` style `key: value` is accepted too.
            let key = key.strip_suffix(':').unwrap_or(key);
            let values: Vec<String> = value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if values.is_empty() {
                bail!("line {line}: {key:?} lists nothing");
            }
            if !key.contains('@') {
                bail!("line {line}: key {key:?} is neither an address nor @domain");
            }
            Ok(Entry {
                line,
                key: key.to_ascii_lowercase(),
                values,
            })
        })
        .collect()
}
