//! Serial numbers: `XXXX-XXXX-XXXX-XXXX`, 16 Crockford base-32 symbols (80 bits).
//!
//! - The first 56 bits are random (from the operating system's CSPRNG), so serials
//!   cannot be guessed: one random try hits one of a million issued serials with odds
//!   of about 1 in 7·10¹⁰, and the server rate-limits tries.
//! - The last 24 bits are a CRC-24 (OpenPGP polynomial) over a domain prefix and the
//!   random part. A CRC of degree 24 detects every error burst up to 24 bits long, so
//!   **every** single mistyped symbol (5 bits) and every swap of two neighbouring symbols
//!   (10 bits) fails the check, offline, before any network call. Other typos pass
//!   with odds of 1 in 16.7 million.
//! - Input is case-insensitive; dashes and spaces are ignored; `O` reads as `0` and
//!   `I`/`L` as `1` (Crockford's rule, because people confuse them).

use std::fmt;
use std::str::FromStr;

use crate::error::{LicenseError, Result};

/// Crockford's base-32 alphabet: digits and letters without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Number of symbols in a serial.
pub const SYMBOLS: usize = 16;
/// Random bytes in a serial.
const RANDOM_BYTES: usize = 7;
/// Mixed into the check so strings from other schemes do not validate by accident.
const DOMAIN: &[u8] = b"outpost-serial-v1";
const CRC24: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_24_OPENPGP);

/// A serial number whose check has passed. Displays as `XXXX-XXXX-XXXX-XXXX`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial {
    /// The 16 canonical symbols, without dashes.
    symbols: [u8; SYMBOLS],
}

fn check(random: &[u8; RANDOM_BYTES]) -> u32 {
    let mut digest = CRC24.digest();
    digest.update(DOMAIN);
    digest.update(random);
    digest.finalize() & 0x00ff_ffff
}

impl Serial {
    /// A fresh random serial (for the activation server).
    pub fn generate() -> Result<Serial> {
        let mut random = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut random)
            .map_err(|e| LicenseError::MalformedSerial(format!("no random source: {e}")))?;
        Ok(Serial::from_random(random))
    }

    /// The serial made of these random bytes (deterministic; for tests and tools).
    pub fn from_random(random: [u8; RANDOM_BYTES]) -> Serial {
        let mut value: u128 = 0;
        for b in random {
            value = (value << 8) | u128::from(b);
        }
        value = (value << 24) | u128::from(check(&random));
        let mut symbols = [0u8; SYMBOLS];
        for (i, s) in symbols.iter_mut().enumerate() {
            let shift = 5 * (SYMBOLS - 1 - i);
            *s = ALPHABET[((value >> shift) & 31) as usize];
        }
        Serial { symbols }
    }

    /// Parses user input: case, dashes and spaces do not matter. Fails with
    /// [`LicenseError::MalformedSerial`] (2001) when a character is invalid, the
    /// length is wrong or the check does not match.
    pub fn parse(input: &str) -> Result<Serial> {
        let mut symbols = [0u8; SYMBOLS];
        let mut n = 0usize;
        let mut value: u128 = 0;
        for c in input.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let digit = symbol_value(c).ok_or_else(|| {
                LicenseError::MalformedSerial(
                    "only letters and digits are allowed (format XXXX-XXXX-XXXX-XXXX)".into(),
                )
            })?;
            if n == SYMBOLS {
                return Err(too_long_or_short());
            }
            symbols[n] = ALPHABET[digit as usize];
            value = (value << 5) | u128::from(digit);
            n += 1;
        }
        if n != SYMBOLS {
            return Err(too_long_or_short());
        }
        let crc = (value & 0x00ff_ffff) as u32;
        let mut random = [0u8; RANDOM_BYTES];
        for (i, b) in random.iter_mut().enumerate() {
            *b = (value >> (24 + 8 * (RANDOM_BYTES - 1 - i))) as u8;
        }
        if check(&random) != crc {
            return Err(LicenseError::MalformedSerial(
                "check digits do not match: the serial was mistyped".into(),
            ));
        }
        Ok(Serial { symbols })
    }

    /// The 16 symbols without dashes (the form stored by the server).
    pub fn compact(&self) -> String {
        String::from_utf8_lossy(&self.symbols).into_owned()
    }

    /// The first and last group, the rest hidden: `ABCD-****-****-WXYZ`, for logs and
    /// status output.
    pub fn masked(&self) -> String {
        let s = self.compact();
        format!("{}-****-****-{}", &s[..4], &s[12..])
    }
}

fn too_long_or_short() -> LicenseError {
    LicenseError::MalformedSerial(format!(
        "a serial has {SYMBOLS} letters and digits (format XXXX-XXXX-XXXX-XXXX)"
    ))
}

/// The 5-bit value of one input character, with Crockford's aliases.
fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| char::from(a) == c)
        .map(|p| p as u8)
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.compact();
        write!(f, "{}-{}-{}-{}", &s[..4], &s[4..8], &s[8..12], &s[12..])
    }
}

/// Debug output masks the serial: it must not leak into logs.
impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.masked())
    }
}

impl FromStr for Serial {
    type Err = LicenseError;
    fn from_str(s: &str) -> Result<Serial> {
        Serial::parse(s)
    }
}

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Serial, D::Error> {
        let s = String::deserialize(d)?;
        Serial::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> Serial {
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
        Serial::from_random([x[0], x[1], x[2], x[3], x[4], x[5], x[6]])
    }

    #[test]
    fn generated_serials_parse_back_and_differ() {
        let a = Serial::generate().unwrap();
        let b = Serial::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 19);
        assert_eq!(text.matches('-').count(), 3);
        assert_eq!(Serial::parse(&text).unwrap(), a);
    }

    #[test]
    fn case_dashes_spaces_and_aliases_are_tolerated() {
        let s = sample(7);
        let compact = s.compact();
        assert_eq!(Serial::parse(&compact).unwrap(), s);
        assert_eq!(Serial::parse(&compact.to_lowercase()).unwrap(), s);
        let spaced: String = compact
            .chars()
            .enumerate()
            .flat_map(|(i, c)| if i % 4 == 3 { vec![c, ' '] } else { vec![c] })
            .collect();
        assert_eq!(Serial::parse(&format!("  {spaced} ")).unwrap(), s);
        // Aliases: a serial holding 0 and 1 reads the same with O, I and L.
        let s = (0..10_000)
            .map(sample)
            .find(|s| s.compact().contains('0') && s.compact().contains('1'))
            .unwrap();
        let aliased = s.to_string().replacen('0', "o", 1).replacen('1', "l", 1);
        assert_eq!(Serial::parse(&aliased).unwrap(), s);
    }

    #[test]
    fn every_single_substitution_and_neighbour_swap_fails_the_check() {
        for i in 0..200 {
            let s = sample(i).compact().into_bytes();
            for pos in 0..SYMBOLS {
                for &c in ALPHABET {
                    if c == s[pos] {
                        continue;
                    }
                    let mut t = s.clone();
                    t[pos] = c;
                    let err = Serial::parse(std::str::from_utf8(&t).unwrap()).unwrap_err();
                    assert_eq!(err.code(), 2001);
                }
                if pos + 1 < SYMBOLS && s[pos] != s[pos + 1] {
                    let mut t = s.clone();
                    t.swap(pos, pos + 1);
                    assert!(Serial::parse(std::str::from_utf8(&t).unwrap()).is_err());
                }
            }
        }
    }

    #[test]
    fn malformed_inputs_get_2001_with_a_reason() {
        let good = sample(3).to_string();
        for bad in [
            "",
            "ABCD",
            "ABCD-EFGH-JKMN-PQRS-TVWX",
            "ABCD-EFGH-JKMN-PQR!",
            "ÄBCD-EFGH-JKMN-PQRS",
            "UUUU-UUUU-UUUU-UUUU",
            &good[..18],
            &format!("{good}0"),
        ] {
            let err = Serial::parse(bad).unwrap_err();
            assert_eq!(err.code(), 2001, "{bad}");
            assert!(!err.to_string().contains(&good), "message leaks the serial");
        }
    }

    #[test]
    fn debug_and_masked_forms_hide_the_middle() {
        let s = sample(11);
        let full = s.to_string();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(&full[5..9]) || full[5..9] == full[0..4]);
        assert_eq!(s.masked().len(), 19);
        assert!(s.masked().starts_with(&full[..4]));
        assert!(s.masked().ends_with(&full[15..]));
    }

    #[test]
    fn serde_uses_the_dashed_form_and_checks_it() {
        let s = sample(5);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Serial>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Serial>("\"AAAA-AAAA-AAAA-AAAA\"").is_err());
    }
}
