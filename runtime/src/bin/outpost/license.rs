//! `outpost license ...`: activation (online and offline requests), what is
//! installed, and installing licence files.

use std::path::Path;

use anyhow::{Context, Result};
use outpost_runtime::outpost_licensing::{
    format_time, unix_now, Fingerprint, LicenseFile, LicenseStore, Serial,
};
use outpost_runtime::package::{Package, TrustedKeys};
use outpost_runtime::Config;
use serde_json::json;

use crate::coded;

/// `outpost license status`: every licence file in the store, with its models, kind,
/// expiry and whether it is valid on this device; with a package, whether that
/// package may open.
pub fn status(config: &Config, package: Option<&Path>, as_json: bool) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let store = LicenseStore::new(&settings.license_dir);
    let now = unix_now();
    let stored = store
        .list()
        .map_err(|e| coded(outpost_runtime::Error::from(e)))?;
    let mut rows = Vec::new();
    for s in &stored {
        let file = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        rows.push(match &s.license {
            Ok(l) => {
                let c = &l.claims;
                let on_this_device = match &c.fingerprint {
                    None => true,
                    Some(bound) => Fingerprint::of_this_device(&c.vendor)
                        .map(|fp| bound.accepts(&fp))
                        .unwrap_or(false),
                };
                let state = if now >= c.expires_at {
                    "expired"
                } else if !on_this_device {
                    "other device"
                } else {
                    "active"
                };
                json!({
                    "file": file, "state": state, "serial": c.serial.masked(),
                    "kind": c.kind.to_string(), "vendor": c.vendor, "models": c.models,
                    "edition": c.edition, "package_name": c.package_name,
                    "issued_at": format_time(c.issued_at), "expires_at": format_time(c.expires_at),
                    "days_left": c.expires_at.saturating_sub(now) / 86_400,
                })
            }
            Err(e) => json!({"file": file, "state": "corrupted", "error_code": e.code(), "message": e.to_string()}),
        });
    }
    // With a package: the verdict the runtime would give when opening it.
    let verdict = match package {
        None => None,
        Some(path) => {
            let trusted = TrustedKeys::load(&settings.trusted_keys).map_err(coded)?;
            let package = Package::open(path, &trusted).map_err(coded)?;
            let m = package.manifest();
            Some(match outpost_runtime::license::enforce(m, &settings) {
                Ok(None) => {
                    json!({"model": m.model.name, "error_code": 0, "message": "open model: no licence needed"})
                }
                Ok(Some(l)) => json!({"model": m.model.name, "error_code": 0,
                    "message": format!("licensed until {} ({})", format_time(l.claims.expires_at), l.claims.serial.masked())}),
                Err(e) => {
                    json!({"model": m.model.name, "error_code": e.code(), "message": e.to_string()})
                }
            })
        }
    };
    if as_json {
        let out =
            json!({"license_dir": settings.license_dir, "licenses": rows, "package": verdict});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("licence directory {}", settings.license_dir.display());
    if rows.is_empty() {
        println!("no licences installed");
    }
    for r in &rows {
        if r["state"] == "corrupted" {
            println!(
                "  {}  corrupted: {}",
                r["file"].as_str().unwrap_or(""),
                r["message"].as_str().unwrap_or("")
            );
            continue;
        }
        let models: Vec<&str> = r["models"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
            .unwrap_or_default();
        println!(
            "  {}  {:<12} {:<12} vendor {}  models {}  edition {}  until {} ({} days left)",
            r["serial"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["vendor"].as_str().unwrap_or(""),
            models.join(","),
            r["edition"].as_str().unwrap_or(""),
            r["expires_at"].as_str().unwrap_or(""),
            r["days_left"],
        );
    }
    if let Some(v) = verdict {
        println!(
            "package {}: {}{}",
            v["model"].as_str().unwrap_or(""),
            if v["error_code"] == 0 {
                String::new()
            } else {
                format!("error {}: ", v["error_code"])
            },
            v["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `outpost license import FILE`: checks the file parses as a licence and installs it
/// atomically. With a package, also checks that it opens that package on this device
/// and refuses the file otherwise.
pub fn import(config: &Config, file: &Path, package: Option<&Path>) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let license = LicenseFile::parse(&bytes, &name).map_err(|e| coded(e.into()))?;
    if let Some(path) = package {
        let req = license_section(&settings, path)?
            .to_requirement()
            .map_err(coded)?;
        let device = outpost_runtime::outpost_licensing::DeviceIdentity {
            fingerprint: Fingerprint::of_this_device(&req.vendor).ok(),
            package_name: settings.app_id.clone(),
        };
        outpost_runtime::outpost_licensing::store::check(&license, &req, &device, unix_now())
            .map_err(|(_, e)| coded(e.into()))?;
    }
    let store = LicenseStore::new(&settings.license_dir);
    let path = store.install(&license).map_err(|e| coded(e.into()))?;
    println!("installed {} as {}", summary(&license), path.display());
    Ok(())
}

/// The package's licence section and the settings, or a clear error for open models
/// and a missing serial.
fn licensed_package(
    config: &Config,
    path: &Path,
) -> Result<(
    outpost_runtime::Settings,
    outpost_runtime::package::manifest::LicenseRequirement,
    Serial,
)> {
    let settings = config.resolve().map_err(coded)?;
    let section = license_section(&settings, path)?;
    let serial = settings
        .serial
        .as_deref()
        .context("no serial: pass --serial or set OUTPOST_SERIAL")?;
    let serial = Serial::parse(serial).map_err(|e| coded(e.into()))?;
    Ok((settings, section, serial))
}

/// `outpost license activate`: one online activation, then the licence is installed.
pub fn activate(config: &Config, package: &Path) -> Result<()> {
    let (settings, section, serial) = licensed_package(config, package)?;
    let lic = outpost_runtime::license::activate(&section, &settings, &serial).map_err(coded)?;
    println!(
        "activated {} in {}",
        summary(&lic),
        settings.license_dir.display()
    );
    Ok(())
}

/// `outpost license request`: the offline activation request, as JSON on stdout.
pub fn request(config: &Config, package: &Path) -> Result<()> {
    let (settings, section, serial) = licensed_package(config, package)?;
    let req = outpost_runtime::license::activation_request(&section, &settings, &serial)
        .map_err(coded)?;
    println!("{}", serde_json::to_string_pretty(&req)?);
    Ok(())
}

/// One line about a licence: masked serial, kind, models, vendor, expiry.
fn summary(license: &LicenseFile) -> String {
    let c = &license.claims;
    format!(
        "{} ({} licence for {} from {}, until {})",
        c.serial.masked(),
        c.kind,
        c.models.join(","),
        c.vendor,
        format_time(c.expires_at)
    )
}

/// The `license` section of a verified package; an open model is an error here.
fn license_section(
    settings: &outpost_runtime::Settings,
    path: &Path,
) -> Result<outpost_runtime::package::manifest::LicenseRequirement> {
    let trusted = TrustedKeys::load(&settings.trusted_keys).map_err(coded)?;
    let package = Package::open(path, &trusted).map_err(coded)?;
    match &package.manifest().license {
        Some(section) => Ok(section.clone()),
        None => anyhow::bail!("{} is an open model: it needs no licence", path.display()),
    }
}
