//! In-memory stores: real implementations of the storage traits that keep everything in the
//! process (tests, and proof that the traits carry no SQLite assumption). Depends only on
//! `core::store`'s traits and the domain types they carry.

pub mod update_log;
