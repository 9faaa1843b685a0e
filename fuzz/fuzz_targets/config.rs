//! The server's config file: any text loads or is refused with an error, never a panic;
//! a config that loads survives a round trip through YAML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::config::Config;

fuzz_target!(|text: &str| {
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let yaml = config.to_yaml().expect("a loaded config serializes");
    let again = Config::parse(&yaml).expect("a written config loads");
    assert_eq!(again, config);
});
