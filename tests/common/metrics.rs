//! A small parser for the OpenMetrics text `/metrics` serves: samples grouped by the
//! family their `# TYPE` line names, so a test compares a whole family exactly instead
//! of matching substrings.

use std::collections::BTreeMap;

/// Label name → value.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name: the family's, or with `_total`, `_count`, `_bucket`...
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Family name → its samples, in exposition order.
#[derive(Debug, Default)]
pub struct Families(pub BTreeMap<String, Vec<Sample>>);

impl Families {
    /// Panics on a sample outside every declared family or on a line it cannot read,
    /// so a format change is noticed rather than silently skipped.
    pub fn parse(text: &str) -> Families {
        let mut families: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(decl) = line.strip_prefix("# TYPE ") {
                let name = decl.split_whitespace().next().expect("# TYPE without name");
                families.entry(name.to_string()).or_default();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line);
            let family = families
                .keys()
                .filter(|f| {
                    sample.name.strip_prefix(f.as_str()).is_some_and(|suffix| {
                        [
                            "", "_total", "_count", "_sum", "_bucket", "_created", "_info",
                        ]
                        .contains(&suffix)
                    })
                })
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("sample {line:?} belongs to no # TYPE family"))
                .clone();
            families.get_mut(&family).unwrap().push(sample);
        }
        Families(families)
    }

    /// Whether `family` is exposed (a labelled family appears with its first sample).
    pub fn has(&self, family: &str) -> bool {
        self.0.contains_key(family)
    }

    /// The samples of `family`; panics if the family is not exposed at all.
    pub fn family(&self, family: &str) -> &[Sample] {
        self.0
            .get(family)
            .unwrap_or_else(|| panic!("no metric family {family}; have {:?}", self.0.keys()))
    }

    /// A counter or gauge family as (label values in label-name order) → value, for an
    /// exact comparison with `assert_eq!`. Histogram families would mix their series:
    /// use [`Families::family`] for those.
    pub fn values(&self, family: &str) -> BTreeMap<Vec<String>, f64> {
        self.family(family)
            .iter()
            .map(|s| (s.labels.values().cloned().collect(), s.value))
            .collect()
    }
}

/// `name{a="x",b="y"} 1` or `name 1` (an optional timestamp after the value is ignored).
fn parse_sample(line: &str) -> Sample {
    let split = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("metric line without value: {line:?}"));
    let (name, mut rest) = line.split_at(split);
    let mut labels = Labels::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        // Each round takes `key="value"` and the `,` or `}` after it.
        while !body.starts_with('}') {
            let (key, after) = body
                .split_once("=\"")
                .unwrap_or_else(|| panic!("label without =\" in {line:?}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("dangling \\ in {line:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            labels.insert(key.to_string(), value);
            body = &after[end + 1..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
        rest = &body[1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("metric line without value: {line:?}"));
    Sample {
        name: name.to_string(),
        labels,
        value: value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
    }
}
