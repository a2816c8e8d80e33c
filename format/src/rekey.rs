//! Re-encrypt an artifact under a new key without rebuilding it (`lorec rekey`): every sealed
//! unit is opened with the old key and sealed again with the new one. Plaintexts, their
//! digests and the layout stay exactly as they were; the header's key id and salt change, and
//! with them every nonce and the associated data, so nothing sealed under the old key is reused.

use sha2::{Digest as _, Sha256};

use crate::container::{Container, ContainerError, OpenedContainer, SectionPlan, UnitSpan, open_unit};
use crate::schema::{ArchivedCompression, ArchivedIndex, Cipher, Compression, SectionKind};
use crate::seal::Key;

/// The oldest format whose index this build writes unchanged (v6 only added a section).
const OLDEST_REKEYABLE: u32 = 5;

fn corrupt(message: impl Into<String>) -> ContainerError {
    ContainerError::Corrupt(message.into())
}

/// Lay out `opened` again, sealed for `new`; write it with `Container::write_to(Some(new), ..)`.
/// `old` must open it. The plaintext digests of every section are checked to be unchanged.
pub fn rekey(opened: &OpenedContainer<'_>, old: &Key, new: &Key, salt: [u8; 16]) -> Result<Container, ContainerError> {
    if !matches!(opened.header.cipher, Cipher::Aes256Gcm { .. }) {
        return Err(corrupt("the artifact is not sealed; build it with a key instead of re-keying it"));
    }
    if opened.format_version < OLDEST_REKEYABLE {
        return Err(corrupt(format!(
            "format v{} is too old to re-key in place; rebuild it (format v{OLDEST_REKEYABLE} and later re-key)",
            opened.format_version
        )));
    }
    opened.verify_bytes()?;
    let sealer = opened.sealer(Some(old))?;
    let mut plans = Vec::new();
    for section in &opened.header.sections {
        let kind = section.kind;
        let plan = match kind {
            SectionKind::Texts => texts_plan(opened, sealer.as_ref())?,
            _ if !section.encrypted => {
                let raw = opened.raw_section(kind).to_vec();
                if section.stripe_len > 0 {
                    SectionPlan::striped(kind, raw, section.stripe_len as usize, false)
                } else {
                    SectionPlan::whole(kind, raw, false)
                }
            }
            _ => {
                let plain = opened.open_section(sealer.as_ref(), kind)?.to_vec();
                if section.stripe_len > 0 {
                    SectionPlan::striped(kind, plain, section.stripe_len as usize, true)
                } else {
                    SectionPlan::whole(kind, plain, true)
                }
            }
        };
        if plan.plain_sha256() != section.plain_sha256 {
            return Err(corrupt(format!("the {} section does not match its digest", kind.name())));
        }
        plans.push(plan);
    }
    let mut header = opened.header.clone();
    header.cipher = Cipher::Aes256Gcm { key_id: new.id().0, salt };
    Ok(Container::layout(header, plans))
}

/// The texts section as it is stored: each block's (compressed) plaintext, opened but not
/// decompressed, so the block table in the index stays valid; each unit's digest is its
/// decompressed plaintext's, as the compiler wrote it.
fn texts_plan(
    opened: &OpenedContainer<'_>,
    sealer: Option<&crate::seal::Sealer>,
) -> Result<SectionPlan, ContainerError> {
    let index_bytes = opened.open_section(sealer, SectionKind::Index)?;
    let index = rkyv::access::<ArchivedIndex, rkyv::rancor::Error>(&index_bytes)
        .map_err(|_| corrupt("the index section is malformed: its bytes are not a valid index"))?;
    let section = opened.section(SectionKind::Texts);
    let raw = opened.raw_section(SectionKind::Texts);
    let mut data = Vec::with_capacity(raw.len());
    let mut units = Vec::with_capacity(index.blocks.len());
    let mut at = 0usize;
    for (i, block) in index.blocks.iter().enumerate() {
        let start = usize::try_from(block.offset.to_native()).unwrap_or(usize::MAX);
        let stored = block.stored_len.to_native() as usize;
        if start != at {
            return Err(corrupt(format!("text block {i} does not follow the one before it")));
        }
        let sealed = raw
            .get(start..start + stored)
            .ok_or_else(|| corrupt(format!("text block {i} lies outside the texts section")))?;
        at = start + stored;
        let compression = match block.compression {
            ArchivedCompression::None => Compression::None,
            ArchivedCompression::Zstd => Compression::Zstd,
        };
        let what = format!("texts section unit {i}");
        let stored_plain = match sealer {
            Some(s) if section.encrypted => {
                s.open(SectionKind::Texts.tag(), i as u64, sealed, &what).map_err(|e| corrupt(format!("{e}")))?
            }
            _ => sealed.to_vec(),
        };
        let plain = open_unit(
            sealer,
            SectionKind::Texts,
            i as u64,
            sealed,
            section.encrypted,
            compression,
            block.plain_len.to_native() as usize,
        )?;
        units.push(UnitSpan { len: stored_plain.len(), plain_sha256: Sha256::digest(&plain[..]).into() });
        data.extend_from_slice(&stored_plain);
    }
    if at != raw.len() {
        return Err(corrupt("the texts section holds bytes no text block names"));
    }
    Ok(SectionPlan {
        kind: SectionKind::Texts,
        stripe_len: 0,
        encrypt: section.encrypted,
        compression: section.compression,
        plain_len: section.plain_len,
        data,
        units,
    })
}
