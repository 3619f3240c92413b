//! Local administration over a Unix socket: the server (`server`: bind, access, framing), what
//! each command does (`commands`), the wire format (`protocol`) and the `reelsmith ctl` client.
//!
//! No HTTP and no token: access is decided by the socket's file mode and the peer's credentials.

pub mod client;
mod commands;
pub mod protocol;
mod server;
mod unix_users;

pub use server::{bind, start, Access, Conn, ControlError, Listener};
