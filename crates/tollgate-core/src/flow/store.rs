//! Shared data kept inside the VM. It serves twice: as the shared data of hosts without it
//! (APISIX answers UNIMPLEMENTED, older versions answer OK and store nothing), where the records
//! in [`super::shared`] then live per VM — per nginx worker — with the same compare-and-swap
//! rules Envoy applies, so the flow works unchanged; and as the shared data of the tests' host,
//! where several workers share one store.

use std::collections::HashMap;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

/// Envoy's shared-data semantics (docs/host-notes.md): every write stamps the key with the
/// next value of one counter (1, 2, ..., skipping 0); a write with `cas` 0 always succeeds;
/// one with another `cas` only if the key exists with that stamp — or does not exist at all
/// (the host does not check a key it has never seen; [`crate::cache::swap_cas`] relies on it).
#[derive(Debug, Default)]
pub struct LocalStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
    counter: u32,
}

impl LocalStore {
    /// (value, cas), or `None` for a key never written.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    pub fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        if let Some((_, stamp)) = self.entries.get(key) {
            if cas != 0 && cas != *stamp {
                return Err(CasMismatch);
            }
        }
        self.counter = self.counter.wrapping_add(1);
        if self.counter == 0 {
            self.counter = 1;
        }
        self.entries
            .insert(key.to_owned(), (value.to_vec(), self.counter));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::swap_cas;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn compare_and_swap_as_envoy_does() {
        let mut s = LocalStore::default();
        assert_eq!(s.get("k"), None);
        // First write of a key: no check, whatever the cas.
        s.set("k", b"a", 7).unwrap();
        let (v, cas) = s.get("k").unwrap();
        assert_eq!(v, b"a");
        assert_ne!(cas, 0);
        // A write against the stamp read succeeds once; the second one is stale.
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", cas), Err(CasMismatch));
        assert_eq!(s.get("k").unwrap().0, b"b");
        // cas 0: unconditional.
        s.set("k", b"d", 0).unwrap();
        assert_eq!(s.get("k").unwrap().0, b"d");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn create_only_write_creates_once() {
        let mut s = LocalStore::default();
        // Two rivals both read "missing" and swap against that read.
        assert!(s.set("slot", b"first", swap_cas(None)).is_ok());
        assert_eq!(s.set("slot", b"second", swap_cas(None)), Err(CasMismatch));
        assert_eq!(s.get("slot").unwrap().0, b"first");
    }

    #[test]
    fn stamps_skip_zero_on_wrap() {
        let mut s = LocalStore {
            counter: u32::MAX - 1,
            ..LocalStore::default()
        };
        s.set("a", b"", 0).unwrap();
        s.set("b", b"", 0).unwrap();
        assert_eq!(s.get("a").unwrap().1, u32::MAX);
        assert_eq!(s.get("b").unwrap().1, 1);
    }
}
