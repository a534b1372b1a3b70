//! Strings handed to C: the version, and JSON the caller frees.

use std::collections::BTreeSet;
use std::ffi::{c_char, CString};
use std::sync::Mutex;

use outpost_runtime::Error;

use crate::boundary::{guard, out};

/// Addresses of the strings given to C and not yet freed, so that freeing a
/// foreign or already freed pointer is refused instead of corrupting the heap.
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands a string to C; it comes back through `outpost_string_free`.
pub(crate) fn give_string(s: CString) -> *mut c_char {
    let ptr = s.into_raw();
    live().insert(ptr as usize);
    ptr
}

/// The body of a function that answers JSON through `out_json`, which the
/// caller frees with `outpost_string_free`. `out_json` is cleared first, so a
/// failure leaves it NULL; with `optional`, a NULL `out_json` means the caller
/// only wants the status.
///
/// # Safety
/// `out_json` is NULL or points to writable memory for one pointer.
pub(crate) unsafe fn answer_json(
    out_json: *mut *mut c_char,
    optional: bool,
    body: impl FnOnce() -> Result<String, Error>,
) -> i32 {
    guard(|| {
        let slot = match optional && out_json.is_null() {
            true => None,
            false => Some(out(out_json, "out_json", std::ptr::null_mut())?),
        };
        let json = body()?;
        if let Some(slot) = slot {
            *slot = give_string(CString::new(json).unwrap_or_default());
        }
        Ok(())
    })
}

/// Frees a string this library returned (JSON from `outpost_results_json`,
/// `outpost_predictor_info` and the licence calls). Freeing NULL does nothing; a
/// pointer this library did not return, or freed already, is 1006 and left alone.
///
/// # Safety
/// None beyond passing a pointer value: it is checked before it is used.
#[no_mangle]
pub unsafe extern "C" fn outpost_string_free(s: *mut c_char) -> i32 {
    guard(|| {
        if s.is_null() {
            return Ok(());
        }
        if !live().remove(&(s as usize)) {
            return Err(Error::InvalidArgument(
                "not a string returned by Outpost, or freed already".into(),
            ));
        }
        drop(CString::from_raw(s));
        Ok(())
    })
}

/// The library's version, e.g. "0.1.0". A static string: do not free it.
#[no_mangle]
pub extern "C" fn outpost_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}
