//! ezt-store
