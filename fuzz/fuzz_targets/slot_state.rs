//! `outpost_provision::state::read_state_in`, the A/B slot state file, on arbitrary bytes
//! in an in-memory store: a corrupt `state.json` must be `StateError`, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use outpost_provision::state::{read_state_in, STATE_FILE};
use outpost_provision::{MemStore, SlotStore};

fuzz_target!(|data: &[u8]| {
    let mut store = MemStore::new();
    let path = Path::new(STATE_FILE);
    store.create(path).expect("create in memory");
    store.append(path, data).expect("append in memory");
    let _ = read_state_in(&store);
});
