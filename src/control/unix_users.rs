//! Users and groups by name (`getpwnam_r`, `getgrnam_r`), for the control socket's access rules.
//!
//! Both go through one [`lookup`]: the record's strings live in a caller buffer that is doubled on
//! `ERANGE` up to [`MAX_BUF`], and the record is read while that buffer is alive. "No such name" is
//! `Ok(None)`; only a failing lookup (NSS down, a name with a NUL byte) is an error.

use std::ffi::{c_char, c_int, CStr, CString};
use std::io;
use std::mem::MaybeUninit;

/// The first buffer tried; enough for all but very large groups.
const FIRST_BUF: usize = 4096;
/// The largest buffer tried before `ERANGE` is reported.
const MAX_BUF: usize = 1 << 20;

/// The shape shared by `getpwnam_r` and `getgrnam_r`: name, record, buffer, its length, result.
type ByName<R> =
    unsafe extern "C" fn(*const c_char, *mut R, *mut c_char, usize, *mut *mut R) -> c_int;

/// Looks a group up by name: its gid and member names; `None` when there is no such group.
pub(super) fn lookup_group(name: &str) -> io::Result<Option<(u32, Vec<String>)>> {
    lookup(name, libc::getgrnam_r, FIRST_BUF, |grp: &libc::group| {
        let mut members = Vec::new();
        let mut p = grp.gr_mem;
        // SAFETY: gr_mem is a NULL-terminated array of C strings inside the lookup's buffer, which
        // outlives this closure.
        unsafe {
            while !p.is_null() && !(*p).is_null() {
                members.push(CStr::from_ptr(*p).to_string_lossy().into_owned());
                p = p.add(1);
            }
        }
        (grp.gr_gid, members)
    })
}

/// Looks a user's uid up by name; `None` when there is no such user.
pub(super) fn lookup_user(name: &str) -> io::Result<Option<u32>> {
    lookup(name, libc::getpwnam_r, FIRST_BUF, |pwd: &libc::passwd| {
        pwd.pw_uid
    })
}

/// Calls `by_name` (one of libc's `get*nam_r`) with a buffer of `first` bytes, doubled on `ERANGE`,
/// and hands the record found to `read` while its buffer is alive.
fn lookup<R, T>(
    name: &str,
    by_name: ByName<R>,
    first: usize,
    read: impl FnOnce(&R) -> T,
) -> io::Result<Option<T>> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0u8; first.max(1)];
    loop {
        let mut record = MaybeUninit::<R>::uninit();
        let mut result: *mut R = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, and `buf.len()` is the buffer's size.
        let rc = unsafe {
            by_name(
                cname.as_ptr(),
                record.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success with a non-null result, `*result` is the record the call filled in,
        // and its pointers point into `buf`, alive until we return.
        return Ok(Some(read(unsafe { &*result })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_unknown_names_are_none() {
        assert_eq!(lookup_user("root").unwrap(), Some(0));
        assert_eq!(lookup_group("root").unwrap().map(|(gid, _)| gid), Some(0));
        assert_eq!(lookup_user("no-such-user-reelsmith").unwrap(), None);
        assert_eq!(lookup_group("no-such-group-reelsmith").unwrap(), None);
        let nul = lookup_user("ro\0ot").unwrap_err();
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_small_buffer_grows_until_the_record_fits() {
        // 8 bytes cannot hold root's name, password, home and shell: only growing finds them.
        let uid = lookup("root", libc::getpwnam_r, 8, |pwd: &libc::passwd| {
            // SAFETY: pw_dir is a C string inside the lookup's buffer.
            let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
            (pwd.pw_uid, dir.to_string_lossy().into_owned())
        });
        let (uid, dir) = uid.unwrap().expect("root exists");
        assert_eq!(uid, 0);
        assert!(dir.starts_with('/'), "{dir}");
        let grp = lookup("root", libc::getgrnam_r, 1, |g: &libc::group| g.gr_gid);
        assert_eq!(grp.unwrap(), Some(0));
    }
}
