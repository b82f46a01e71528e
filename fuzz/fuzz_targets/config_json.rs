//! Document::from_json on arbitrary UTF-8: never panics; what it accepts compiles, audits and survives a
//! JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::{reachability, Document, Table};
use std::sync::Arc;

fuzz_target!(|text: &str| {
    if let Ok(doc) = Document::from_json(text) {
        let json = serde_json::to_string(&doc).expect("a document serializes");
        let back = Document::from_json(&json).expect("its JSON is accepted");
        assert_eq!(back, doc, "JSON round trip");
        let t = Table::compile(Arc::new(doc), 1, None).expect("a valid document compiles");
        let _ = reachability(&t, 1_780_272_000);
    }
});
