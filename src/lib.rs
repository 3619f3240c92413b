pub mod event;
pub mod store;
pub mod config;
pub mod pipeline;
pub mod request;
