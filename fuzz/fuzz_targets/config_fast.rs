//! The fast TOML path against the `toml` crate on arbitrary UTF-8: neither panics, and whenever the fast
//! path returns a document, `toml` accepts the text and reads the same document; reading from a
//! stream agrees with reading the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::fastload::{parse, parse_reader, parse_with_toml};

fuzz_target!(|text: &str| {
    let fast = parse(text);
    let full = parse_with_toml(text);
    if let Some(doc) = &fast {
        assert_eq!(
            full.as_ref(),
            Ok(doc),
            "fast path accepted what toml reads otherwise"
        );
    }
    let streamed = parse_reader(std::io::BufReader::with_capacity(16, text.as_bytes()));
    assert_eq!(streamed, fast, "reader and text disagree");
});
