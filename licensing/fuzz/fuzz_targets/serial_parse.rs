//! Serial parsing: never panics; whatever parses prints back to a form that parses to
//! the same serial.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_licensing::Serial;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(serial) = Serial::parse(text) {
        assert_eq!(Serial::parse(&serial.to_string()).ok(), Some(serial.clone()));
        assert_eq!(Serial::parse(&serial.compact()).ok(), Some(serial));
    }
});
