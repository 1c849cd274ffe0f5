//! The outbound HTTP client: every call EZThrottle makes to somebody else's server (job
//! dispatch, webhook delivery; later node-to-node calls and the inbound proxy) goes through
//! what this crate builds.
//!
//! - [`client::build`]: rustls, pooled, HTTP/2 where offered, never following redirects, no
//!   proxy from the environment (only `outbound.proxy`), connecting only to addresses the
//!   [`resolver::SsrfResolver`] lets through (so a name that rebinds to a private address after
//!   admission is still refused at connect time);
//! - [`error::CallError`]: why a call failed, typed (connect, timeout, body, SSRF denied, …),
//!   with a text that never shows a URL's path or query;
//! - [`body::read_capped`]: a response body read up to a byte cap;
//! - [`headers::header_pairs`]: response headers as plain pairs.
//!
//! It knows nothing about jobs, stores or lanes: callers classify outcomes themselves.
#![warn(missing_docs)]

pub mod body;
pub mod client;
pub mod error;
pub mod headers;
pub mod resolver;

pub use error::{describe, log_target, CallError};
pub use resolver::{SsrfBlocked, SsrfResolver};
