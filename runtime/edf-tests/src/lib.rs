//! Test-only crate: see `tests/edf.rs`. It exists so the mock time driver is linked
//! into no binary but these tests.
