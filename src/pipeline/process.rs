//! Subprocesses (placeholder until the pipeline lands).
