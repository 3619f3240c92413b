//! Local administration over a Unix socket: the server (`server`: bind, access, framing; `unix_users`:
//! user and group lookups for its access rule), what each command does (`commands`), the wire format
//! (`protocol`) and the `reelsmith ctl` client (`cli`: its clap subcommands, each building a
//! `protocol::Request`; `client`: the connection; `table`: the readable replies).
//!
//! No HTTP and no token: access is decided by the socket's file mode and the peer's credentials.

pub mod cli;
pub mod client;
mod commands;
pub mod protocol;
mod server;
mod table;
mod unix_users;

pub use server::{bind, start, Access, Conn, ControlError, Listener, Serving};
