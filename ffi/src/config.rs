//! `outpost_config_t`: settings for opening predictors and for licence calls.

use std::ffi::c_char;
use std::sync::Mutex;

use outpost_runtime::{Config, Error};

use crate::boundary::{guard, optional_text, out, text};
use crate::handles::Registry;

/// Settings, set key by key (`outpost_config_set`). Every key left unset is taken
/// from its `OUTPOST_*` environment variable, then from the default.
pub struct OutpostConfig {
    _opaque: [u8; 0],
}

pub(crate) static CONFIGS: Registry<Mutex<Config>> = Registry::new(1, "config");

/// The settings behind a nullable config handle (NULL: environment and defaults).
pub(crate) fn config_of(handle: *const OutpostConfig) -> Result<Config, Error> {
    if handle.is_null() {
        return Ok(Config::default());
    }
    let cell = CONFIGS.get(handle as usize)?;
    let config = cell.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(config)
}

/// Makes an empty config: every setting from the environment or the default.
///
/// Ownership: the caller owns `*out_config` and frees it with `outpost_config_free`.
///
/// # Safety
/// `out_config` is NULL (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_config_new(out_config: *mut *mut OutpostConfig) -> i32 {
    guard(|| {
        let slot = out(out_config, "out_config", std::ptr::null_mut())?;
        *slot = CONFIGS.insert(Mutex::new(Config::default())) as *mut OutpostConfig;
        Ok(())
    })
}

/// Sets one setting from text; `value` NULL or "" unsets it. Keys: `threads`,
/// `backend` (auto, cpu, gpu, npu), `precision` (fp32, int8), `threshold` (0..1),
/// `top_k`, `serial`, `license_dir`, `app_id`, `license_server`, `log_level`,
/// `trusted_keys` (a `:`-separated list of key files or directories, `;` on
/// Windows). An unknown key or a bad value is 1001. Settings are read when a
/// predictor opens: changing them later does not change an open predictor.
///
/// # Safety
/// `key` and `value` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn outpost_config_set(
    config: *mut OutpostConfig,
    key: *const c_char,
    value: *const c_char,
) -> i32 {
    guard(|| {
        let cell = CONFIGS.get(config as usize)?;
        let key = text(key, "key")?;
        let value = optional_text(value, "value")?;
        let mut config = cell.lock().unwrap_or_else(|p| p.into_inner());
        config.set(key, value)
    })
}

/// Frees a config. Predictors opened with it are not affected. Freeing NULL does
/// nothing; freeing twice is 1007.
#[no_mangle]
pub extern "C" fn outpost_config_free(config: *mut OutpostConfig) -> i32 {
    guard(|| CONFIGS.remove(config as usize))
}
