//! Version 1 of the public API.

pub mod jobs;
