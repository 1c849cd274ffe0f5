//! ezt-store-sqlite
