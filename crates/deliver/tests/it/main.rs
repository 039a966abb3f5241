//! tads-deliver's integration tests: real receivers on 127.0.0.1.

mod alertmanager;
mod common;
mod durability;
mod receivers;
