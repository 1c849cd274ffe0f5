//! Version 1 of the public API.

pub mod jobs;
pub mod proxy;
pub mod webhook_secrets;
