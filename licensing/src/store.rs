//! The licence directory on a device (default `~/.outpost/licenses`).
//!
//! - One file per activated serial: `<vendor>_<hash of the serial>.license.json`, written
//!   atomically (temporary file in the same directory, fsync, rename, fsync of the
//!   directory), so a crash or power cut leaves the old file or the new one, never half.
//! - `clock.json` holds the latest time the device has seen. A clock more than
//!   [`CLOCK_SLACK_SECS`] behind it, or behind a licence's issue time, is refused
//!   (2012): turning the clock back must not revive an expired licence.
//! - A damaged file is reported (2014) and skipped; it never stops other licences
//!   from working, and never panics.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{file_name, LicenseError, Result};
use crate::fingerprint::DeviceIdentity;
use crate::keys::LicenseKeys;
use crate::license_file::LicenseFile;
use crate::serial::Serial;
use crate::{format_time, LicenseKind};

/// Suffix of licence files in the store.
pub const LICENSE_SUFFIX: &str = ".license.json";
/// File holding the clock guard's last-seen time.
pub const CLOCK_FILE: &str = "clock.json";
/// How far the clock may step back (NTP corrections, clock drift between devices and
/// the server) before it counts as moved backwards.
pub const CLOCK_SLACK_SECS: u64 = 10 * 60;

/// What a package needs: from its manifest's `license` section.
#[derive(Debug, Clone)]
pub struct Requirement {
    /// Vendor id that must have issued the licence.
    pub vendor: String,
    /// Product id the licence must cover.
    pub product_id: String,
    /// Edition the licence must grant, if the package names one.
    pub edition: Option<String>,
    /// Licence-signing keys the package trusts.
    pub keys: LicenseKeys,
}

/// One file of the store, parsed or not.
#[derive(Debug, Clone)]
pub struct StoredLicense {
    /// Path of the file.
    pub path: PathBuf,
    /// The licence, or why it cannot be read (2014).
    pub license: Result<LicenseFile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ClockState {
    last_seen: u64,
}

/// The licence directory.
#[derive(Debug, Clone)]
pub struct LicenseStore {
    dir: PathBuf,
}

impl LicenseStore {
    /// A store in `dir`; nothing is created until a licence is installed.
    pub fn new(dir: impl Into<PathBuf>) -> LicenseStore {
        LicenseStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a licence atomically and returns its path. An existing licence for the
    /// same vendor and serial is replaced.
    pub fn install(&self, license: &LicenseFile) -> Result<PathBuf> {
        let c = &license.claims;
        // Named by a hash of the serial: file listings must not show serials.
        let digest = Sha256::digest(format!("{}/{}", c.vendor, c.serial.compact()));
        let path = self.dir.join(format!(
            "{}_{}{LICENSE_SUFFIX}",
            c.vendor,
            hex::encode(&digest[..8])
        ));
        self.write_atomic(&path, &license.to_json())?;
        Ok(path)
    }

    /// Every licence file in the store, sorted by path. A missing directory is an
    /// empty store.
    pub fn list(&self) -> Result<Vec<StoredLicense>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LicenseError::store(&self.dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(LICENSE_SUFFIX) && !n.starts_with('.'))
            })
            .collect();
        paths.sort();
        Ok(paths
            .into_iter()
            .map(|path| {
                let license =
                    read_limited(&path).and_then(|b| LicenseFile::parse(&b, &file_name(&path)));
                StoredLicense { path, license }
            })
            .collect())
    }

    /// Finds a licence that lets this device run the package now.
    ///
    /// With `serial`, only that serial's licence counts (a new serial needs
    /// activation); without, any stored licence for the model does. When none is
    /// valid, the error is the most specific one: a licence for this model that is
    /// expired or made for another device says so, rather than "not installed".
    pub fn find_valid(
        &self,
        req: &Requirement,
        device: &DeviceIdentity,
        serial: Option<&Serial>,
        now: u64,
    ) -> Result<LicenseFile> {
        let stored = self.list()?;
        let last_seen = self.check_clock(now, &stored)?;
        let mut best: Option<(u8, LicenseError)> = None;
        let mut corrupt = None;
        for s in stored {
            let lic = match s.license {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable licence file");
                    corrupt.get_or_insert(e);
                    continue;
                }
            };
            if serial.is_some_and(|want| *want != lic.claims.serial) {
                continue;
            }
            match check(&lic, req, device, now) {
                Ok(()) => {
                    self.record_time(now, last_seen);
                    return Ok(lic);
                }
                Err((rank, e)) => {
                    if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                        best = Some((rank, e));
                    }
                }
            }
        }
        Err(match (best, corrupt) {
            // A verified licence for this model outranks an unreadable file.
            (Some((rank, e)), _) if rank >= RANK_SAME_MODEL => e,
            (_, Some(c)) => c,
            (Some((_, e)), None) => e,
            (None, None) => LicenseError::NotInstalled {
                product: req.product_id.clone(),
            },
        })
    }

    /// Refuses a clock behind the last-seen time or behind a stored licence's issue
    /// time; returns the last-seen time on record.
    fn check_clock(&self, now: u64, stored: &[StoredLicense]) -> Result<u64> {
        let last_seen = self.read_clock().last_seen;
        let issued = stored
            .iter()
            .filter_map(|s| s.license.as_ref().ok())
            .map(|l| l.claims.issued_at)
            .max()
            .unwrap_or(0);
        let seen = last_seen.max(issued);
        if now.saturating_add(CLOCK_SLACK_SECS) < seen {
            return Err(LicenseError::ClockMovedBackwards {
                now: format_time(now),
                seen: format_time(seen),
            });
        }
        Ok(last_seen)
    }

    fn read_clock(&self) -> ClockState {
        std::fs::read(self.dir.join(CLOCK_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Moves the last-seen time forward. Best effort: a read-only store still runs.
    fn record_time(&self, now: u64, last_seen: u64) {
        if now <= last_seen {
            return;
        }
        let state = serde_json::to_vec(&ClockState { last_seen: now }).unwrap_or_default();
        if let Err(e) = self.write_atomic(&self.dir.join(CLOCK_FILE), &state) {
            tracing::warn!(error = %e, "cannot record the clock guard time");
        }
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| LicenseError::store(&self.dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(|e| LicenseError::store(&self.dir, e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| LicenseError::store(path, e))?;
        tmp.persist(path)
            .map_err(|e| LicenseError::store(path, e.error))?;
        // The rename is durable only once the directory is synced (Unix).
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| LicenseError::store(path, e))?;
    let mut bytes = Vec::new();
    f.take(crate::license_file::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LicenseError::store(path, e))?;
    Ok(bytes)
}

/// Ranks of failure, later checks first: the error of the licence that got furthest
/// is the one worth reporting.
const RANK_SIGNATURE: u8 = 0;
const RANK_OTHER_MODEL: u8 = 1;
const RANK_SAME_MODEL: u8 = 2;

/// Checks one licence against the package and the device, in a fixed order:
/// signature (2015), vendor and model (2009), edition (2016), expiry (2004),
/// package name (2008), fingerprint (2011).
pub fn check(
    lic: &LicenseFile,
    req: &Requirement,
    device: &DeviceIdentity,
    now: u64,
) -> std::result::Result<(), (u8, LicenseError)> {
    let c = &lic.claims;
    lic.verify_signature(&req.keys)
        .map_err(|e| (RANK_SIGNATURE, e))?;
    if c.vendor != req.vendor {
        return Err((
            RANK_OTHER_MODEL,
            LicenseError::VendorOrModelMismatch(format!(
                "licence is from vendor {}, the package from {}",
                c.vendor, req.vendor
            )),
        ));
    }
    if !c.models.contains(&req.product_id) {
        return Err((
            RANK_OTHER_MODEL,
            LicenseError::VendorOrModelMismatch(format!(
                "licence does not list product {}",
                req.product_id
            )),
        ));
    }
    let same = |e| (RANK_SAME_MODEL, e);
    if let Some(needed) = &req.edition {
        if &c.edition != needed {
            return Err(same(LicenseError::EditionMismatch {
                granted: c.edition.clone(),
                needed: needed.clone(),
            }));
        }
    }
    if now >= c.expires_at {
        return Err(same(LicenseError::Expired {
            product: req.product_id.clone(),
            expired_at: format_time(c.expires_at),
        }));
    }
    if c.kind == LicenseKind::ProductLine && c.package_name != device.package_name {
        return Err(same(LicenseError::WrongPackageName {
            found: device.package_name.clone().unwrap_or_else(|| "none".into()),
        }));
    }
    if let Some(bound) = &c.fingerprint {
        match &device.fingerprint {
            Some(fp) if bound.accepts(fp) => {}
            _ => return Err(same(LicenseError::FingerprintMismatch)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_signing_key;
    use crate::license_file::tests::{claims, fingerprint};
    use crate::license_file::Claims;
    use ed25519_dalek::SigningKey;

    struct Fixture {
        _tmp: tempfile::TempDir,
        store: LicenseStore,
        key: SigningKey,
        req: Requirement,
        device: DeviceIdentity,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = LicenseStore::new(tmp.path().join("licenses"));
        let key = generate_signing_key().unwrap();
        let mut keys = LicenseKeys::default();
        keys.add(key.verifying_key());
        Fixture {
            _tmp: tmp,
            store,
            key,
            req: Requirement {
                vendor: "acme".into(),
                product_id: "efficientnet_lite0".into(),
                edition: Some("standard".into()),
                keys,
            },
            device: DeviceIdentity {
                fingerprint: Some(fingerprint("a")),
                package_name: None,
            },
        }
    }

    const NOW: u64 = 1_800_000_000 + 86_400;

    impl Fixture {
        fn install(&self, edit: impl FnOnce(&mut Claims)) -> LicenseFile {
            let mut c = claims();
            edit(&mut c);
            let lic = LicenseFile::sign(c, &self.key, None);
            self.store.install(&lic).unwrap();
            lic
        }
        fn find(&self, now: u64) -> Result<LicenseFile> {
            self.store.find_valid(&self.req, &self.device, None, now)
        }
    }

    #[test]
    fn empty_store_is_not_installed() {
        let f = fixture();
        assert_eq!(f.find(NOW).unwrap_err().code(), 2013);
    }

    #[test]
    fn a_valid_licence_is_found_and_written_atomically() {
        let f = fixture();
        let lic = f.install(|_| {});
        assert_eq!(f.find(NOW).unwrap(), lic);
        let names: Vec<String> = std::fs::read_dir(f.store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp")), "{names:?}");
        assert!(names.contains(&CLOCK_FILE.to_string()), "{names:?}");
        // By serial: the right one is found, another one is not installed.
        let s = lic.claims.serial.clone();
        f.store
            .find_valid(&f.req, &f.device, Some(&s), NOW)
            .unwrap();
        let other = Serial::from_random([7; 7]);
        let err = f
            .store
            .find_valid(&f.req, &f.device, Some(&other), NOW)
            .unwrap_err();
        assert_eq!(err.code(), 2013);
    }

    #[test]
    fn each_rule_has_its_code() {
        type Edit = Box<dyn Fn(&mut Claims)>;
        let cases: Vec<(u32, Edit)> = vec![
            (2004, Box::new(|c| c.expires_at = NOW - 1)),
            (
                2011,
                Box::new(|c| c.fingerprint = Some(fingerprint("other-machine"))),
            ),
            (2009, Box::new(|c| c.vendor = "globex".into())),
            (2009, Box::new(|c| c.models = vec!["yolov8".into()])),
            (2016, Box::new(|c| c.edition = "lite".into())),
            (
                2008,
                Box::new(|c| {
                    c.kind = LicenseKind::ProductLine;
                    c.package_name = Some("com.other.app".into());
                }),
            ),
        ];
        for (code, edit) in cases {
            let f = fixture();
            f.install(|c| edit(c));
            let err = f.find(NOW).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn product_line_binds_the_package_name() {
        let mut f = fixture();
        f.install(|c| {
            c.kind = LicenseKind::ProductLine;
            c.package_name = Some("com.acme.app".into());
            c.fingerprint = None;
        });
        assert_eq!(f.find(NOW).unwrap_err().code(), 2008);
        f.device.package_name = Some("com.acme.app".into());
        f.find(NOW).unwrap();
    }

    #[test]
    fn an_untrusted_signer_is_2015() {
        let f = fixture();
        let rogue = generate_signing_key().unwrap();
        f.store
            .install(&LicenseFile::sign(claims(), &rogue, None))
            .unwrap();
        assert_eq!(f.find(NOW).unwrap_err().code(), 2015);
    }

    #[test]
    fn the_most_specific_error_wins() {
        let f = fixture();
        // An unrelated model's licence and an expired one for this model.
        f.install(|c| {
            c.models = vec!["yolov8".into()];
            c.serial = Serial::from_random([2; 7]);
        });
        f.install(|c| c.expires_at = NOW - 10);
        assert_eq!(f.find(NOW).unwrap_err().code(), 2004);
        // A valid one next to both is found.
        f.install(|c| c.serial = Serial::from_random([3; 7]));
        f.find(NOW).unwrap();
    }

    #[test]
    fn clock_moved_backwards_is_refused() {
        let f = fixture();
        f.install(|_| {});
        f.find(NOW + 30 * 86_400).unwrap();
        // Back by a day: refused even though the licence would still be valid then.
        let err = f.find(NOW).unwrap_err();
        assert_eq!(err.code(), 2012, "{err}");
        // Small corrections are fine.
        f.find(NOW + 30 * 86_400 - 60).unwrap();
        // A clock before the licence's own issue time is refused too, with no state file.
        let g = fixture();
        g.install(|_| {});
        assert_eq!(g.find(1_700_000_000).unwrap_err().code(), 2012);
    }

    #[test]
    fn corrupted_files_are_reported_and_skipped() {
        let f = fixture();
        std::fs::create_dir_all(f.store.dir()).unwrap();
        let bad = f.store.dir().join(format!("acme_X{LICENSE_SUFFIX}"));
        std::fs::write(&bad, b"{\"format\": 1, \"claims\": {").unwrap();
        let err = f.find(NOW).unwrap_err();
        assert_eq!(err.code(), 2014, "{err}");
        assert!(err.to_string().contains("acme_X"), "{err}");
        // A good licence beside it still works.
        f.install(|_| {});
        f.find(NOW).unwrap();
        let listed = f.store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().filter(|s| s.license.is_err()).count(), 1);
    }

    #[test]
    fn reinstalling_a_serial_replaces_its_file() {
        let f = fixture();
        f.install(|c| c.expires_at = NOW - 10);
        let fresh = f.install(|_| {});
        assert_eq!(f.store.list().unwrap().len(), 1);
        assert_eq!(f.find(NOW).unwrap(), fresh);
    }
}
