//! The boundary between C and Rust: status codes, the per-thread last error, the
//! panic guard, and checked conversions of C arguments.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use outpost_runtime::Error;

/// The status of a call that succeeded. Every other status is an error code of
/// `docs/errors.md` (1xxx input, 2xxx licence, 3xxx package, 4xxx backend).
pub const OUTPOST_OK: i32 = 0;

thread_local! {
    /// Code and message of the last failure on this thread.
    static LAST_ERROR: RefCell<(i32, CString)> = RefCell::new((OUTPOST_OK, CString::default()));
}

/// Runs the body of an exported function: its error becomes the status (and the
/// thread's last error), and a panic becomes 4003 instead of unwinding into C.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Error>) -> i32 {
    let error = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return OUTPOST_OK,
        Ok(Err(e)) => e,
        Err(panic) => caught(panic),
    };
    let code = error.code() as i32;
    // A message never holds a NUL in practice; drop any rather than lose the message.
    let message = CString::new(error.to_string().replace('\0', "")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = (code, message));
    code
}

/// A panic caught at the boundary, as the error it is returned as (4003).
pub(crate) fn caught(panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::Internal(what)
}

/// A null pointer argument, as an error naming it.
pub(crate) fn null(name: &str) -> Error {
    Error::InvalidArgument(format!("{name} is NULL"))
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(null(name));
    }
    CStr::from_ptr(ptr)
        .to_str()
        .map_err(|_| Error::InvalidArgument(format!("{name} is not valid UTF-8")))
}

/// An optional C string argument: NULL is `None`.
///
/// # Safety
/// As [`text`].
pub(crate) unsafe fn optional_text<'a>(
    ptr: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Error> {
    if ptr.is_null() {
        Ok(None)
    } else {
        text(ptr, name).map(Some)
    }
}

/// A byte buffer argument; NULL or zero length is an error (there is no image).
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Error> {
    if ptr.is_null() {
        return Err(null(name));
    }
    if len == 0 {
        return Err(Error::InvalidArgument(format!("{name} has length 0")));
    }
    if len > isize::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{name} length {len} is not a buffer size"
        )));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// Checks an out-pointer and clears what it points to, so a failed call leaves
/// `*out` NULL (or zero) rather than stale.
///
/// # Safety
/// `out` is NULL or points to writable memory for one `T`.
pub(crate) unsafe fn out<'a, T>(out: *mut T, name: &str, empty: T) -> Result<&'a mut T, Error> {
    if out.is_null() {
        return Err(null(name));
    }
    out.write(empty);
    Ok(&mut *out)
}

/// The code of the last failure on the calling thread, or `OUTPOST_OK` if no call
/// on this thread has failed yet. Successful calls leave it unchanged.
#[no_mangle]
pub extern "C" fn outpost_last_error_code() -> i32 {
    LAST_ERROR
        .try_with(|last| last.borrow().0)
        .unwrap_or(OUTPOST_OK)
}

/// The message of the last failure on the calling thread ("" if none). The string
/// belongs to the library: it stays valid until the next failing call on the same
/// thread. Do not free it.
#[no_mangle]
pub extern "C" fn outpost_last_error_message() -> *const c_char {
    static EMPTY: &CStr = c"";
    LAST_ERROR
        .try_with(|last| last.borrow().1.as_ptr())
        .unwrap_or(EMPTY.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_panics_become_codes_and_messages() {
        assert_eq!(guard(|| Ok(())), OUTPOST_OK);
        assert_eq!(guard(|| Err(Error::EmptyImage("no bytes".into()))), 1102);
        assert_eq!(outpost_last_error_code(), 1102);
        let msg = unsafe { CStr::from_ptr(outpost_last_error_message()) };
        assert_eq!(msg.to_str().unwrap(), "empty image: no bytes");
        // A later success leaves the last error in place.
        assert_eq!(guard(|| Ok(())), OUTPOST_OK);
        assert_eq!(outpost_last_error_code(), 1102);
        assert_eq!(guard(|| panic!("boom")), 4003);
        let msg = unsafe { CStr::from_ptr(outpost_last_error_message()) };
        assert_eq!(msg.to_str().unwrap(), "internal error: boom");
    }

    #[test]
    fn the_last_error_is_per_thread() {
        assert_eq!(guard(|| Err(Error::InvalidArgument("x".into()))), 1006);
        std::thread::spawn(|| assert_eq!(outpost_last_error_code(), OUTPOST_OK))
            .join()
            .unwrap();
        assert_eq!(outpost_last_error_code(), 1006);
    }

    #[test]
    fn arguments_are_checked() {
        unsafe {
            assert_eq!(text(std::ptr::null(), "path").unwrap_err().code(), 1006);
            let bad = [0xffu8, 0xfe, 0];
            let err = text(bad.as_ptr().cast(), "path").unwrap_err();
            assert!(err.to_string().contains("UTF-8"), "{err}");
            assert_eq!(optional_text(std::ptr::null(), "p").unwrap(), None);
            assert_eq!(bytes(std::ptr::null(), 3, "data").unwrap_err().code(), 1006);
            let b = [1u8];
            assert_eq!(bytes(b.as_ptr(), 0, "data").unwrap_err().code(), 1006);
            assert_eq!(
                bytes(b.as_ptr(), usize::MAX, "data").unwrap_err().code(),
                1006
            );
            let mut slot = 7u32;
            assert_eq!(*out(&mut slot, "out", 0).unwrap(), 0);
        }
    }
}
