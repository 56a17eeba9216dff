//! Objects of the store that no row names, older than the grace period: a pack sealed by an
//! upload or a rewrite that crashed before recording it, the object of a retired pack whose row
//! went just before a crash, the file of a loose chunk whose row is gone. Young ones are left
//! alone: an upload records its pack right after sealing it.

use std::collections::HashSet;

use diesel::prelude::*;

use super::{GcError, Pass, IN_BATCH};
use crate::chunking::Hash;
use crate::db::packs::PackId;
use crate::db::schema::{chunks, packs};
use crate::db::DbError;
use crate::storage::backend::ListedObject;

/// The pack id in a key `packs/<hh>/<32 hex>.pack`.
pub fn pack_of_key(key: &str) -> Option<PackId> {
    let rest = key.strip_prefix("packs/")?;
    let (hh, file) = rest.split_once('/')?;
    let hex = file.strip_suffix(".pack")?;
    if hex.len() != 32 || !hex.starts_with(hh) || hh.len() != 2 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(PackId(id))
}

/// The chunk in a key `<hh>/<64 hex>` (a loose chunk of a directory store).
pub fn loose_of_key(key: &str) -> Option<Hash> {
    let (hh, hex) = key.split_once('/')?;
    if hex.len() != 64 || hh.len() != 2 || !hex.starts_with(hh) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Deletes the orphans older than the cutoff; objects and bytes deleted (dry: found).
pub async fn delete(pass: &Pass) -> Result<(u64, u64), GcError> {
    let backend = pass.store.backend();
    // A directory store may still hold loose chunks at its root; an object store only packs.
    let listed: Vec<ListedObject> =
        if backend.loose_root().is_some() { backend.list(None).await? } else { backend.list(Some("packs")).await? };
    let cutoff = pass.cutoff.and_utc();
    let old: Vec<&ListedObject> = listed.iter().filter(|o| o.modified < cutoff).collect();
    let pack_keys: Vec<(PackId, &ListedObject)> =
        old.iter().filter_map(|o| pack_of_key(&o.key).map(|id| (id, *o))).collect();
    let loose_keys: Vec<(Hash, &ListedObject)> =
        old.iter().filter_map(|o| loose_of_key(&o.key).map(|h| (h, *o))).collect();
    let ids: Vec<Vec<u8>> = pack_keys.iter().map(|(id, _)| id.0.to_vec()).collect();
    let hashes: Vec<Vec<u8>> = loose_keys.iter().map(|(h, _)| h.to_vec()).collect();
    let (known_packs, known_chunks) = pass
        .db
        .run(move |c| {
            let mut p: HashSet<Vec<u8>> = HashSet::new();
            for part in ids.chunks(IN_BATCH) {
                p.extend(packs::table.filter(packs::id.eq_any(part.to_vec())).select(packs::id).load::<Vec<u8>>(c)?);
            }
            let mut h: HashSet<Vec<u8>> = HashSet::new();
            for part in hashes.chunks(IN_BATCH) {
                h.extend(
                    chunks::table.filter(chunks::hash.eq_any(part.to_vec())).select(chunks::hash).load::<Vec<u8>>(c)?,
                );
            }
            Ok::<_, DbError>((p, h))
        })
        .await?;
    let orphans: Vec<&ListedObject> = pack_keys
        .iter()
        .filter(|(id, _)| !known_packs.contains(id.0.as_slice()))
        .map(|(_, o)| *o)
        .chain(loose_keys.iter().filter(|(h, _)| !known_chunks.contains(h.as_slice())).map(|(_, o)| *o))
        .collect();
    let bytes = orphans.iter().map(|o| o.size).sum();
    if pass.settings.dry_run {
        return Ok((orphans.len() as u64, bytes));
    }
    for o in &orphans {
        pass.check()?;
        // Checked again right before: a row may have appeared since the listing (it cannot for an
        // object older than the grace period, unless a store move copied it; then it stays).
        if let Some(id) = pack_of_key(&o.key) {
            let raw = id.0.to_vec();
            let known = pass
                .db
                .run(move |c| Ok(packs::table.filter(packs::id.eq(raw)).count().get_result::<i64>(c)? > 0))
                .await?;
            if known {
                continue;
            }
        }
        tracing::info!(key = %o.key, size = o.size, "deleting an orphan object");
        backend.delete_key(&o.key).await?;
    }
    Ok((orphans.len() as u64, bytes))
}
