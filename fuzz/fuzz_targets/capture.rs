//! driver::capture::parse_capture on arbitrary bytes: never panics, and the frames it returns come
//! from the input (their bytes add up to less than the input).
#![no_main]

use driver::capture::parse_capture;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_capture(data) {
        Ok(frames) => {
            let total: usize = frames.iter().map(|f| f.data.len()).sum();
            assert!(total <= data.len());
        }
        Err((_, offset)) => assert!(offset <= data.len(), "error offset inside the input"),
    }
});
