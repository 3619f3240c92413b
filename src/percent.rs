//! Percent-encoding of URL query and form components (RFC 3986: unreserved characters stay). A leaf:
//! the HTTP client and the secret redactor (which also hides a secret's encoded form) both use it.

/// Percent-encodes a query or form component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
