//! Device fingerprints: salted hashes of stable machine facts.
//!
//! A fingerprint has up to four components, each read from the system and hashed at
//! once; the raw values never leave this module:
//!
//! | component | Linux / Android source | Windows (registry) | macOS |
//! | --- | --- | --- | --- |
//! | `machine` | `/etc/machine-id`, else `/var/lib/dbus/machine-id` | `Cryptography\MachineGuid` | `IOPlatformUUID` (`ioreg`) |
//! | `board` | DMI `product_uuid`, else DMI `board_serial`, else the device-tree `serial-number` (ARM boards) | the SMBIOS UUID (`HardwareConfig\LastConfig`) | `IOPlatformSerialNumber` |
//! | `cpu` | `/proc/cpuinfo`: `model name`, else `Hardware` + `CPU implementer` + `CPU part` | `CentralProcessor\0\ProcessorNameString` | `sysctl machdep.cpu.brand_string` |
//! | `mac` | MAC address of the primary NIC: the first interface by name with a `device` link (a physical NIC), else the first non-loopback one | (not read) | `en0` (`ifconfig`) |
//!
//! Each component is stored as the first 16 bytes of SHA-256 over a domain tag, the
//! salt, the component name and the value. The salt is the vendor id, so one vendor's
//! fingerprints cannot be matched against another vendor's.
//!
//! **Tolerance rule.** A licence made for fingerprint L is accepted on a device with
//! fingerprint D when at most one of L's components is different or missing in D,
//! and at least one matches; with fewer than three components in L, all must match.
//! Why one: a NIC swap, a mainboard/BIOS replacement or an OS reinstall (new
//! machine-id) each change exactly one fact, and users should not lose their licence
//! to a repair. A cloned disk image on a second machine keeps `machine` and usually
//! `cpu`, but changes both `board` and `mac`, so it is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{LicenseError, Result};

/// Version prefix of the text form.
const VERSION: &str = "v1";
/// Domain tag mixed into every component hash.
const DOMAIN: &[u8] = b"outpost-fingerprint-v1";
/// Bytes kept of each component's SHA-256.
const HASH_BYTES: usize = 16;

/// A device fingerprint: component name → salted hash (hex).
///
/// Text form: `v1;board=<hex>;cpu=<hex>;machine=<hex>;mac=<hex>` (components in name
/// order, absent ones left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    components: BTreeMap<String, String>,
}

/// Who is running the model: the device fingerprint, and for apps the package name
/// (Android) or bundle id (iOS) that product-line licences bind to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceIdentity {
    /// This device's fingerprint, when one could be taken.
    pub fingerprint: Option<Fingerprint>,
    /// The app's package name or bundle id, when running inside an app.
    pub package_name: Option<String>,
}

/// Raw machine facts, before hashing. Only [`Fingerprint::from_facts`] sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineFacts {
    /// Component name → raw value.
    pub values: BTreeMap<String, String>,
}

impl MachineFacts {
    /// Reads the facts of this machine: from `/etc`, `/proc` and `/sys` on Linux and
    /// Android, the registry on Windows, `ioreg`/`sysctl`/`ifconfig` on macOS. Other
    /// systems (iOS) have none: their apps bind product-line licences to the app id.
    pub fn collect() -> MachineFacts {
        platform::facts()
    }

    /// Reads the facts from a file-system root (`/` on a device; a prepared tree in
    /// tests, where it stands in for another machine's `/etc`, `/proc` and `/sys`).
    pub fn collect_from(root: &Path) -> MachineFacts {
        let read = |rel: &str| -> Option<String> {
            let text = std::fs::read_to_string(root.join(rel)).ok()?;
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            (!text.is_empty()).then(|| text.to_string())
        };
        let mut values = BTreeMap::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                values.insert(name.to_string(), v);
            }
        };
        put(
            "machine",
            read("etc/machine-id").or_else(|| read("var/lib/dbus/machine-id")),
        );
        put(
            "board",
            [
                "sys/class/dmi/id/product_uuid",
                "sys/class/dmi/id/board_serial",
                "sys/firmware/devicetree/base/serial-number",
                "proc/device-tree/serial-number",
            ]
            .iter()
            .find_map(|rel| read(rel).filter(|v| !is_placeholder(v))),
        );
        put("cpu", read("proc/cpuinfo").and_then(|t| cpu_identity(&t)));
        put("mac", primary_mac(&root.join("sys/class/net")));
        MachineFacts { values }
    }
}

/// DMI fields that vendors leave as filler carry no identity.
fn is_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    l.chars().all(|c| c == '0' || c == '-' || c == 'f')
        || l.contains("to be filled")
        || l.contains("not specified")
        || l == "default string"
}

/// The CPU's model: x86 `model name`, or ARM `Hardware` and the core's implementer/part.
fn cpu_identity(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    if let Some(model) = field("model name").filter(|m| !m.is_empty()) {
        return Some(model);
    }
    let parts: Vec<String> = ["Hardware", "CPU implementer", "CPU part"]
        .iter()
        .filter_map(|k| field(k))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The MAC of the primary NIC: physical interfaces first (they have a `device` link),
/// by name; loopback and all-zero addresses are skipped.
fn primary_mac(net: &Path) -> Option<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(net)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "lo"))
        .collect();
    names.sort();
    let mac = |p: &PathBuf| -> Option<String> {
        let a = std::fs::read_to_string(p.join("address")).ok()?;
        let a = a.trim().to_ascii_lowercase();
        (!a.is_empty() && a.chars().any(|c| c != '0' && c != ':')).then_some(a)
    };
    names
        .iter()
        .filter(|p| p.join("device").exists())
        .find_map(mac)
        .or_else(|| names.iter().find_map(mac))
}

impl Fingerprint {
    /// This device's fingerprint, salted with `salt` (the vendor id). Fails with
    /// [`LicenseError::NoFingerprint`] (2017) when no machine fact can be read.
    pub fn of_this_device(salt: &str) -> Result<Fingerprint> {
        Fingerprint::from_facts(&MachineFacts::collect(), salt)
    }

    /// Hashes raw facts with a salt.
    pub fn from_facts(facts: &MachineFacts, salt: &str) -> Result<Fingerprint> {
        if facts.values.is_empty() {
            return Err(LicenseError::NoFingerprint(
                "no machine-id, board serial, CPU model or network address is readable".into(),
            ));
        }
        let components = facts
            .values
            .iter()
            .map(|(name, value)| {
                let mut h = Sha256::new();
                for part in [DOMAIN, salt.as_bytes(), name.as_bytes(), value.as_bytes()] {
                    h.update((part.len() as u64).to_le_bytes());
                    h.update(part);
                }
                (name.clone(), hex::encode(&h.finalize()[..HASH_BYTES]))
            })
            .collect();
        Ok(Fingerprint { components })
    }

    /// Parses the text form. Fails with [`LicenseError::Corrupt`] on anything else.
    pub fn parse(text: &str) -> Result<Fingerprint> {
        let bad = |reason: &str| LicenseError::Corrupt {
            file: "fingerprint".into(),
            reason: reason.into(),
        };
        let mut parts = text.split(';');
        if parts.next() != Some(VERSION) {
            return Err(bad("fingerprint does not start with v1"));
        }
        let mut components = BTreeMap::new();
        for part in parts {
            let (name, hash) = part
                .split_once('=')
                .ok_or_else(|| bad("fingerprint component without '='"))?;
            let valid_name = !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            let valid_hash = hash.len() == 2 * HASH_BYTES
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !valid_name || !valid_hash {
                return Err(bad("malformed fingerprint component"));
            }
            if components
                .insert(name.to_string(), hash.to_string())
                .is_some()
            {
                return Err(bad("repeated fingerprint component"));
            }
        }
        if components.is_empty() {
            return Err(bad("fingerprint has no components"));
        }
        Ok(Fingerprint { components })
    }

    /// Number of components.
    pub fn len(&self) -> usize {
        self.components.len()
    }

    /// True when there is no component (never for a parsed or collected fingerprint).
    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// Whether a licence made for `self` may run on a device with fingerprint
    /// `device`, under the module's tolerance rule.
    pub fn accepts(&self, device: &Fingerprint) -> bool {
        let mut matching = 0;
        let mut differing = 0;
        for (name, hash) in &self.components {
            match device.components.get(name) {
                Some(h) if h == hash => matching += 1,
                _ => differing += 1,
            }
        }
        let allowed = if self.components.len() >= 3 { 1 } else { 0 };
        matching >= 1 && differing <= allowed
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(VERSION)?;
        for (name, hash) in &self.components {
            write!(f, ";{name}={hash}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Fingerprint, D::Error> {
        let s = String::deserialize(d)?;
        Fingerprint::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Fact sources of Windows and macOS, and the text parsing they need (tested on
/// every system).
mod platform {
    use super::MachineFacts;

    /// `"IOPlatformUUID" = "…"` and `"IOPlatformSerialNumber" = "…"` from
    /// `ioreg -rd1 -c IOPlatformExpertDevice`.
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    pub fn ioreg_value(text: &str, key: &str) -> Option<String> {
        text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(&format!("\"{key}\""))?;
            let value = rest.trim().strip_prefix('=')?.trim().trim_matches('"');
            (!value.is_empty()).then(|| value.to_string())
        })
    }

    /// The `ether xx:xx:…` address of `ifconfig en0`.
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    pub fn ifconfig_ether(text: &str) -> Option<String> {
        text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "ether").then(|| words.next().map(str::to_ascii_lowercase))?
        })
    }

    /// `{4C4C4544-…}` (the registry's `LastConfig`) without braces, lower case.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub fn braced_uuid(text: &str) -> Option<String> {
        let v = text.trim().trim_start_matches('{').trim_end_matches('}');
        (!v.is_empty()).then(|| v.to_ascii_lowercase())
    }

    /// This machine's facts, from the system's own sources.
    #[cfg(not(any(windows, target_os = "macos")))]
    pub fn facts() -> MachineFacts {
        MachineFacts::collect_from(std::path::Path::new("/"))
    }

    /// This machine's facts, from the system's own sources.
    #[cfg(target_os = "macos")]
    pub fn facts() -> MachineFacts {
        macos_facts()
    }

    /// This machine's facts, from the system's own sources.
    #[cfg(windows)]
    pub fn facts() -> MachineFacts {
        windows_facts()
    }

    #[cfg_attr(not(any(windows, target_os = "macos")), allow(dead_code))]
    fn put(facts: &mut MachineFacts, name: &str, value: Option<String>) {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            facts.values.insert(name.to_string(), v.trim().to_string());
        }
    }

    #[cfg(target_os = "macos")]
    fn macos_facts() -> MachineFacts {
        let run = |cmd: &str, args: &[&str]| -> Option<String> {
            let out = std::process::Command::new(cmd).args(args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let mut facts = MachineFacts::default();
        let ioreg =
            run("/usr/sbin/ioreg", &["-rd1", "-c", "IOPlatformExpertDevice"]).unwrap_or_default();
        put(&mut facts, "machine", ioreg_value(&ioreg, "IOPlatformUUID"));
        put(
            &mut facts,
            "board",
            ioreg_value(&ioreg, "IOPlatformSerialNumber"),
        );
        put(
            &mut facts,
            "cpu",
            run("/usr/sbin/sysctl", &["-n", "machdep.cpu.brand_string"]),
        );
        put(
            &mut facts,
            "mac",
            run("/sbin/ifconfig", &["en0"]).and_then(|t| ifconfig_ether(&t)),
        );
        facts
    }

    #[cfg(windows)]
    fn windows_facts() -> MachineFacts {
        use winreg::enums::HKEY_LOCAL_MACHINE;
        use winreg::RegKey;
        let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
        let read = |path: &str, name: &str| -> Option<String> {
            hklm.open_subkey(path)
                .ok()?
                .get_value::<String, _>(name)
                .ok()
        };
        let mut facts = MachineFacts::default();
        put(
            &mut facts,
            "machine",
            read("SOFTWARE\\Microsoft\\Cryptography", "MachineGuid"),
        );
        put(
            &mut facts,
            "board",
            read("SYSTEM\\HardwareConfig", "LastConfig").and_then(|v| braced_uuid(&v)),
        );
        put(
            &mut facts,
            "cpu",
            read(
                "HARDWARE\\DESCRIPTION\\System\\CentralProcessor\\0",
                "ProcessorNameString",
            ),
        );
        facts
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn macos_and_windows_outputs_parse() {
            let ioreg = r#"+-o J316sAP  <class IOPlatformExpertDevice, id 0x100000211>
    {
      "IOPlatformSerialNumber" = "C02XK0AAJG5H"
      "IOPlatformUUID" = "6A4B1B5E-0C4D-5C1B-9D5E-2B1A0B0C0D0E"
    }"#;
            assert_eq!(
                ioreg_value(ioreg, "IOPlatformUUID").as_deref(),
                Some("6A4B1B5E-0C4D-5C1B-9D5E-2B1A0B0C0D0E")
            );
            assert_eq!(
                ioreg_value(ioreg, "IOPlatformSerialNumber").as_deref(),
                Some("C02XK0AAJG5H")
            );
            assert_eq!(ioreg_value(ioreg, "Missing"), None);
            let ifconfig = "en0: flags=8863<UP,BROADCAST> mtu 1500\n\toptions=400<CHANNEL_IO>\n\tether A4:83:E7:00:11:22\n\tinet 10.0.0.2";
            assert_eq!(
                ifconfig_ether(ifconfig).as_deref(),
                Some("a4:83:e7:00:11:22")
            );
            assert_eq!(ifconfig_ether("lo0: flags"), None);
            assert_eq!(
                braced_uuid("{4C4C4544-0042-3510-8051-B4C04F4E3232}").as_deref(),
                Some("4c4c4544-0042-3510-8051-b4c04f4e3232")
            );
            assert_eq!(braced_uuid("{}"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> MachineFacts {
        MachineFacts {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn machine() -> MachineFacts {
        facts(&[
            ("machine", "4c4c4544-0042"),
            ("board", "ec2a1b7e-1111-2222"),
            ("cpu", "Intel(R) Xeon(R) Platinum 8488C"),
            ("mac", "02:42:ac:11:00:02"),
        ])
    }

    fn with(mut f: MachineFacts, name: &str, value: Option<&str>) -> MachineFacts {
        match value {
            Some(v) => f.values.insert(name.into(), v.into()),
            None => f.values.remove(name),
        };
        f
    }

    #[test]
    fn hashes_hide_raw_values_and_depend_on_the_salt() {
        let a = Fingerprint::from_facts(&machine(), "acme").unwrap();
        let text = a.to_string();
        assert!(text.starts_with("v1;board="), "{text}");
        assert!(!text.contains("Xeon") && !text.contains("02:42"), "{text}");
        assert_eq!(Fingerprint::parse(&text).unwrap(), a);
        let b = Fingerprint::from_facts(&machine(), "other-vendor").unwrap();
        assert!(!a.accepts(&b), "another vendor's salt must not match");
        assert_eq!(Fingerprint::from_facts(&machine(), "acme").unwrap(), a);
    }

    #[test]
    fn one_changed_component_is_tolerated_two_are_not() {
        let lic = Fingerprint::from_facts(&machine(), "acme").unwrap();
        for name in ["machine", "board", "cpu", "mac"] {
            let changed = with(machine(), name, Some("replaced"));
            let fp = Fingerprint::from_facts(&changed, "acme").unwrap();
            assert!(lic.accepts(&fp), "one change ({name}) must be tolerated");
            let missing = Fingerprint::from_facts(&with(machine(), name, None), "acme").unwrap();
            assert!(
                lic.accepts(&missing),
                "one missing ({name}) must be tolerated"
            );
        }
        // A cloned disk on another machine: same machine-id and CPU, new board and NIC.
        let clone = with(
            with(machine(), "board", Some("other-board")),
            "mac",
            Some("02:00:00:00:00:99"),
        );
        assert!(!lic.accepts(&Fingerprint::from_facts(&clone, "acme").unwrap()));
    }

    #[test]
    fn small_fingerprints_must_match_exactly() {
        let two = facts(&[("machine", "m"), ("cpu", "c")]);
        let lic = Fingerprint::from_facts(&two, "v").unwrap();
        assert!(lic.accepts(&lic));
        let other = Fingerprint::from_facts(&with(two, "cpu", Some("d")), "v").unwrap();
        assert!(!lic.accepts(&other));
    }

    #[test]
    fn no_facts_is_error_2017() {
        let err = Fingerprint::from_facts(&MachineFacts::default(), "v").unwrap_err();
        assert_eq!(err.code(), 2017);
    }

    #[test]
    fn parse_rejects_malformed_text() {
        let good = Fingerprint::from_facts(&machine(), "acme")
            .unwrap()
            .to_string();
        for bad in [
            "",
            "v1",
            "v2;cpu=00112233445566778899aabbccddeeff",
            "v1;cpu",
            "v1;cpu=0011",
            "v1;CPU=00112233445566778899aabbccddeeff",
            "v1;cpu=00112233445566778899aabbccddeefg",
            "v1;cpu=00112233445566778899aabbccddeeff;cpu=00112233445566778899aabbccddeeff",
            &good.replace(';', ","),
        ] {
            assert_eq!(Fingerprint::parse(bad).unwrap_err().code(), 2014, "{bad}");
        }
    }

    #[test]
    fn facts_are_read_from_a_system_tree() {
        let root = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("etc/machine-id", "abc123\n");
        w(
            "sys/class/dmi/id/product_uuid",
            "00000000-0000-0000-0000-000000000000\n",
        );
        w("sys/class/dmi/id/board_serial", "BOARD-42\n");
        w(
            "proc/cpuinfo",
            "processor\t: 0\nHardware\t: BCM2835\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n",
        );
        w("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        w("sys/class/net/veth0/address", "aa:aa:aa:aa:aa:aa\n");
        w("sys/class/net/wlan0/address", "B8:27:EB:00:00:01\n");
        std::fs::create_dir_all(root.path().join("sys/class/net/wlan0/device")).unwrap();
        let f = MachineFacts::collect_from(root.path());
        assert_eq!(f.values["machine"], "abc123");
        assert_eq!(f.values["board"], "BOARD-42", "all-zero DMI uuid is filler");
        assert_eq!(f.values["cpu"], "BCM2835 0x41 0xd08");
        assert_eq!(f.values["mac"], "b8:27:eb:00:00:01", "physical NIC first");
        assert_eq!(
            MachineFacts::collect_from(&root.path().join("none"))
                .values
                .len(),
            0
        );
    }

    #[test]
    fn this_machine_has_a_fingerprint() {
        // Every Linux CI machine has at least /proc/cpuinfo.
        let fp = Fingerprint::of_this_device("acme").unwrap();
        assert!(!fp.is_empty());
        assert_eq!(Fingerprint::of_this_device("acme").unwrap(), fp, "stable");
    }
}
