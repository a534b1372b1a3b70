//! Licence files and fingerprints: never panic; a parsed licence round-trips and its
//! signature check returns an error rather than panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_licensing::{Fingerprint, LicenseFile, LicenseKeys};

fuzz_target!(|data: &[u8]| {
    if let Ok(lic) = LicenseFile::parse(data, "fuzz.license.json") {
        let again = LicenseFile::parse(&lic.to_json(), "again").expect("re-parse");
        assert_eq!(again, lic);
        let _ = lic.verify_signature(&LicenseKeys::default());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(fp) = Fingerprint::parse(text) {
            assert_eq!(Fingerprint::parse(&fp.to_string()).ok(), Some(fp.clone()));
            let _ = fp.accepts(&fp);
        }
    }
});
