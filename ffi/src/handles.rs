//! Live handles. A handle given to C is a token (a counter with the kind in its low
//! bits), looked up here on every call: a freed, foreign or wrong-kind handle is
//! found out and refused (1007) instead of being dereferenced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use outpost_runtime::Error;

/// Bits of a token that hold its kind.
const KIND_BITS: usize = 4;

/// Tokens are never reused, so a freed handle stays detectable for the life of the
/// process. Starts above zero: a token is never NULL.
static NEXT: AtomicUsize = AtomicUsize::new(1);

/// The handles of one kind that are alive, each shared by the calls using it.
pub(crate) struct Registry<T> {
    kind: usize,
    name: &'static str,
    live: Mutex<BTreeMap<usize, Arc<T>>>,
}

/// Names of the kinds, by kind number, to say what a wrong-kind token is.
const KIND_NAMES: [&str; 4] = ["", "config", "predictor", "results"];

impl<T> Registry<T> {
    /// An empty registry for kind `kind` (1..=3, see `KIND_NAMES`).
    pub(crate) const fn new(kind: usize, name: &'static str) -> Registry<T> {
        Registry {
            kind,
            name,
            live: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Arc<T>>> {
        // A panic while the lock was held cannot leave the map half-changed
        // (inserts and removes are single calls), so a poisoned lock is still good.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a value and returns its token.
    pub(crate) fn insert(&self, value: T) -> usize {
        let token = (NEXT.fetch_add(1, Ordering::Relaxed) << KIND_BITS) | self.kind;
        self.lock().insert(token, Arc::new(value));
        token
    }

    /// The value behind a token, kept alive for the caller even if another thread
    /// frees the handle meanwhile.
    pub(crate) fn get(&self, token: usize) -> Result<Arc<T>, Error> {
        if token == 0 {
            return Err(Error::InvalidArgument(format!(
                "{} handle is NULL",
                self.name
            )));
        }
        self.lock()
            .get(&token)
            .cloned()
            .ok_or_else(|| self.not_live(token))
    }

    /// Forgets a token; its value is dropped when its last user is done. NULL is
    /// a no-op, as for C's `free`.
    pub(crate) fn remove(&self, token: usize) -> Result<(), Error> {
        if token == 0 {
            return Ok(());
        }
        match self.lock().remove(&token) {
            Some(_) => Ok(()),
            None => Err(self.not_live(token)),
        }
    }

    fn not_live(&self, token: usize) -> Error {
        let kind = token & ((1 << KIND_BITS) - 1);
        let issued = token >> KIND_BITS < NEXT.load(Ordering::Relaxed);
        let why = match KIND_NAMES.get(kind) {
            Some(other) if kind != self.kind && kind != 0 && issued => {
                format!(
                    "a {other} handle was passed where a {} handle is expected",
                    self.name
                )
            }
            _ if kind == self.kind && issued => {
                format!("this {} handle was freed already", self.name)
            }
            _ => format!("not a {} handle made by this library", self.name),
        };
        Error::InvalidHandle(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_kind_and_liveness() {
        let a: Registry<String> = Registry::new(1, "config");
        let b: Registry<String> = Registry::new(2, "predictor");
        let t = a.insert("x".into());
        assert_eq!(*a.get(t).unwrap(), "x");
        let wrong = b.get(t).unwrap_err();
        assert_eq!(wrong.code(), 1007);
        assert!(
            wrong.to_string().contains("a config handle was passed"),
            "{wrong}"
        );
        let held = a.get(t).unwrap();
        a.remove(t).unwrap();
        // The holder keeps its value; the token is dead for everyone else.
        assert_eq!(*held, "x");
        let freed = a.get(t).unwrap_err();
        assert!(freed.to_string().contains("freed already"), "{freed}");
        assert_eq!(a.remove(t).unwrap_err().code(), 1007);
        assert_eq!(a.get(0).unwrap_err().code(), 1006);
        a.remove(0).unwrap();
        let foreign = a.get(0xdead_beef_0000).unwrap_err();
        assert!(
            foreign.to_string().contains("not a config handle"),
            "{foreign}"
        );
    }
}
