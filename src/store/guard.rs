//! Panics of the storage engine as errors. redb panics on some damaged files (a malformed allocator
//! state, a bad page): every call into it that reads or writes the file runs inside
//! [`catch_panic`], which turns the panic into `redb::Error::Corrupted` with the panic's message, so
//! a damaged log is refused with a message, never a crash. The panic hook stays quiet for a caught
//! panic (a thread-local flag), and prints every other panic as before.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// `Some` while this thread runs inside `catch_panic`: the caught panic's message goes here.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "an unknown panic".into());
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let caught = CAUGHT.with(|c| match c.borrow_mut().as_mut() {
                Some(slot) => {
                    *slot = Some(format!("{message}{place}"));
                    true
                }
                None => false,
            });
            if !caught {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err(redb::Error::Corrupted(..))` naming the panic.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, redb::Error> {
    install_hook();
    let outer = CAUGHT.with(|c| c.borrow_mut().replace(None));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    let message = CAUGHT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    r.map_err(|_| {
        let what = message.flatten().unwrap_or_else(|| "a panic".into());
        redb::Error::Corrupted(format!("the storage engine failed on this file ({what})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_corruption_error_naming_it() {
        let r: Result<(), _> = catch_panic(|| panic!("Malformed allocator state"));
        let e = r.unwrap_err();
        assert!(matches!(e, redb::Error::Corrupted(_)));
        assert!(e.to_string().contains("Malformed allocator state"), "{e}");
        assert_eq!(catch_panic(|| 7).unwrap(), 7);
        // Nested: the inner catch does not swallow the outer's flag.
        let r = catch_panic(|| {
            let inner: Result<(), _> = catch_panic(|| panic!("inner"));
            assert!(inner.is_err());
            panic!("outer")
        });
        assert!(r.unwrap_err().to_string().contains("outer"));
    }
}
