//! Version 1 of the public API.

pub mod envelope;
pub mod jobs;
pub mod lanes;
pub mod torrent;
pub mod webhook_secrets;
pub mod workflows;
