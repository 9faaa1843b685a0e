//! The sender login map parser: any text parses or is refused without panicking, and in
//! a map that parses, every login may use its own address and the null sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn::policy::sender::SenderLoginMap;

fuzz_target!(|text: &str| {
    let Ok(map) = SenderLoginMap::parse(text) else {
        return;
    };
    for word in text.split_whitespace() {
        assert!(map.may_send(word, word));
        assert!(map.may_send(word, ""));
        let _ = map.may_send(word, "someone@example.com");
    }
});
