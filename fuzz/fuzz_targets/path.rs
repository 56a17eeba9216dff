//! Path validation (`filesync_core::path`): any string a peer sends is either
//! refused or safe to join under a sync root — only plain components, within the
//! length limits — and the helpers that build paths from a valid one (conflict
//! copy names, ancestors) only ever produce valid paths in the right directory.
#![no_main]

use std::path::{Component, Path};

use chrono::{TimeZone, Utc};
use filesync_core::path::{self, WsPath, MAX_COMPONENT_BYTES, MAX_PATH_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `path | username | device name | n`, separated by 0xff (never in UTF-8).
    let mut parts = data.split(|b| *b == 0xff);
    let Ok(p) = std::str::from_utf8(parts.next().unwrap_or_default()) else { return };
    let user = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let device = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let n = parts.next().map_or(1, |b| b.iter().fold(0u32, |n, b| n.wrapping_mul(31).wrapping_add(u32::from(*b))));

    let valid = path::validate(p).is_ok();
    assert_eq!(WsPath::parse(p).is_ok(), valid);
    assert_eq!(WsPath::try_from(p.to_owned()).is_ok(), valid);
    if !valid {
        return;
    }
    let ws = WsPath::parse(p).unwrap();
    assert!(p.len() <= MAX_PATH_BYTES);
    let root = Path::new("/sync/root");
    let joined = root.join(ws.as_str());
    assert!(joined.starts_with(root));
    let mut count = 0;
    for c in Path::new(ws.as_str()).components() {
        assert!(matches!(c, Component::Normal(_)), "{p:?} has {c:?}");
        count += 1;
    }
    assert_eq!(count, ws.components().count(), "{p:?}: the OS splits it differently");
    for c in ws.components() {
        assert!(!c.is_empty() && c != "." && c != ".." && c.len() <= MAX_COMPONENT_BYTES);
    }
    for a in path::ancestors(p) {
        assert_eq!(path::validate(a), Ok(()), "ancestor {a:?} of {p:?}");
    }

    let at = Utc.timestamp_opt(1_700_000_000 + i64::from(n % 1_000_000), 0).unwrap();
    if let Some(copy) = path::conflict_copy_name(p, &user, &device, at, n) {
        let copy = WsPath::parse(&copy).unwrap_or_else(|e| panic!("conflict copy {copy:?} of {p:?} is invalid: {e}"));
        assert!(copy.same_dir(&ws), "conflict copy {copy} of {p} is in another directory");
        assert_ne!(copy, ws);
    }
});
