//! The actors: thin adapters that give the pure core (event, store, pipeline) its concurrency.
//! `journal` is the sole writer of the log (on its own Arbiter thread); `scheduler` owns the queue;
//! `job` runs one attempt of one job.

pub mod job;
pub mod journal;
pub mod scheduler;
