//! `outpost license ...`: activation (online and offline requests), what is
//! installed, and installing licence files. The work is in
//! `outpost_runtime::license`, shared with the C, Java and Swift bindings.

use std::path::Path;

use anyhow::Result;
use outpost_runtime::license::{self, InstalledLicense};
use outpost_runtime::Config;

use crate::coded;

/// `outpost license status`: every licence file in the store, with its models, kind,
/// expiry and whether it is valid on this device; with a package, whether that
/// package may open.
pub fn status(config: &Config, package: Option<&Path>, as_json: bool) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let status = license::status(&settings, package).map_err(coded)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("licence directory {}", status.license_dir.display());
    if status.licenses.is_empty() {
        println!("no licences installed");
    }
    for l in &status.licenses {
        match l {
            InstalledLicense::Corrupted { file, message, .. } => {
                println!("  {file}  corrupted: {message}")
            }
            InstalledLicense::Readable {
                state,
                serial,
                kind,
                vendor,
                models,
                edition,
                expires_at,
                days_left,
                ..
            } => println!(
                "  {serial}  {state:<12} {kind:<12} vendor {vendor}  models {}  edition {edition}  until {expires_at} ({days_left} days left)",
                models.join(","),
            ),
        }
    }
    if let Some(v) = status.package {
        println!(
            "package {}: {}{}",
            v.model,
            if v.error_code == 0 {
                String::new()
            } else {
                format!("error {}: ", v.error_code)
            },
            v.message
        );
    }
    Ok(())
}

/// `outpost license import FILE`: checks the file parses as a licence and installs it
/// atomically. With a package, also checks that it opens that package on this device
/// and refuses the file otherwise.
pub fn import(config: &Config, file: &Path, package: Option<&Path>) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let (license, path) = license::import(&settings, file, package).map_err(coded)?;
    println!(
        "installed {} as {}",
        license::summary(&license),
        path.display()
    );
    Ok(())
}

/// `outpost license activate`: one online activation, then the licence is installed.
pub fn activate(config: &Config, package: &Path) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let lic = license::activate_package(&settings, package).map_err(coded)?;
    println!(
        "activated {} in {}",
        license::summary(&lic),
        settings.license_dir.display()
    );
    Ok(())
}

/// `outpost license request`: the offline activation request, as JSON on stdout.
pub fn request(config: &Config, package: &Path) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let req = license::request_for_package(&settings, package).map_err(coded)?;
    println!("{}", serde_json::to_string_pretty(&req)?);
    Ok(())
}
