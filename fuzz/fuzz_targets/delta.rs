//! Delta-manifest apply (`proto::delta`): any runs a peer sends over any base
//! either rebuild exactly the list a plain reading of the runs gives (and only
//! when its hash is the one announced), or are refused — never a panic, never
//! more than `max_chunks` entries. And `diff` then `apply` gives back the new list.
#![no_main]

use filesync_core::chunking::ChunkRef;
use filesync_core::proto::delta::{self, DeltaError, Run};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Chunks from a small alphabet, so lists repeat chunks and share them with the base.
fn chunk(u: &mut Unstructured) -> Result<ChunkRef> {
    let id: u8 = u.int_in_range(0..=15)?;
    Ok(ChunkRef { hash: [id; 32], len: u32::from(id) * 100 })
}

fn chunks(u: &mut Unstructured, max: usize) -> Result<Vec<ChunkRef>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| chunk(u)).collect()
}

fn run(u: &mut Unstructured) -> Result<Run> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Run::New(chunk(u)?),
        // Mostly small numbers, sometimes anything (overflow, far past the end).
        1 => Run::Copy { start: u.arbitrary()?, count: u.arbitrary()? },
        _ => Run::Copy { start: u.int_in_range(0..=70)?, count: u.int_in_range(0..=70)? },
    })
}

/// What the runs mean, written as plainly as possible (no limit, no hash).
fn reference(base: &[ChunkRef], runs: &[Run]) -> Option<Vec<ChunkRef>> {
    let mut out = Vec::new();
    for r in runs {
        match *r {
            Run::New(c) => out.push(c),
            Run::Copy { start, count } => {
                // A copy lies inside the base, even an empty one.
                if u64::from(start) + u64::from(count) > base.len() as u64 {
                    return None;
                }
                for i in 0..u64::from(count) {
                    out.push(base[usize::try_from(u64::from(start) + i).ok()?]);
                }
            }
        }
        if out.len() > 100_000 {
            return None;
        }
    }
    Some(out)
}

fn check(u: &mut Unstructured) -> Result<()> {
    let base = chunks(u, 64)?;
    let max_chunks = u.int_in_range(0..=200)?;
    let nruns = u.int_in_range(0..=32)?;
    let runs = (0..nruns).map(|_| run(u)).collect::<Result<Vec<_>>>()?;
    let announced = chunks(u, 8)?;
    let lie: bool = u.arbitrary()?;

    match reference(&base, &runs) {
        Some(want) => {
            let expected = if lie { delta::manifest_hash(&announced) } else { delta::manifest_hash(&want) };
            let got = delta::apply(&base, &runs, max_chunks, &expected);
            if want.len() > max_chunks {
                assert_eq!(got, Err(DeltaError::TooLong(max_chunks)));
            } else if delta::manifest_hash(&want) == expected {
                assert_eq!(got, Ok(want));
            } else {
                assert_eq!(got, Err(DeltaError::HashMismatch));
            }
        }
        // A run past the base: refused, whatever the hash (or too long first).
        None => {
            let got = delta::apply(&base, &runs, max_chunks, &delta::manifest_hash(&announced));
            assert!(matches!(got, Err(DeltaError::OutOfRange(_) | DeltaError::TooLong(_))), "{got:?}");
        }
    }

    let new = chunks(u, 128)?;
    let runs = delta::diff(&base, &new);
    assert!(runs.len() <= new.len());
    assert_eq!(delta::apply(&base, &runs, new.len(), &delta::manifest_hash(&new)), Ok(new));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
