//! ezt-server
