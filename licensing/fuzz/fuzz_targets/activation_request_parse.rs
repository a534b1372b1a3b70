//! The activation request body (the server parses it from untrusted clients): never
//! panics; accepted requests round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_licensing::protocol::ActivationRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ActivationRequest::parse(data) {
        let bytes = serde_json::to_vec(&req).expect("serialise");
        assert_eq!(ActivationRequest::parse(&bytes).ok(), Some(req));
    }
});
