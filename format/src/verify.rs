//! The full integrity check behind `lorec verify`: every byte hashed, and with the key every
//! section decrypted, decompressed, hash-checked and structurally validated.

use rkyv::rancor;

use crate::container::{ContainerError, OpenedContainer, SectionHasher};
use crate::schema::{ArchivedIndex, ArchivedTextBlock, SectionKind};
use crate::seal::Key;

/// What a full verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Whether sections were decrypted and validated (a key was given or none was needed).
    pub deep: bool,
    pub text_blocks: usize,
}

/// Check the whole file. Without a key a sealed artifact gets the byte-level check only.
pub fn verify(container: &OpenedContainer<'_>, key: Option<&Key>) -> Result<VerifyReport, ContainerError> {
    container.verify_bytes()?;
    let sealed = matches!(container.header.cipher, crate::Cipher::Aes256Gcm { .. });
    if sealed && key.is_none() {
        return Ok(VerifyReport { deep: false, text_blocks: 0 });
    }
    let sealer = container.sealer(key)?;
    let version = container.format_version;
    let check_hash = |kind: SectionKind, plain: &[u8]| -> Result<(), ContainerError> {
        let section = container.section(kind);
        if crate::container::plaintext_digest(version, section.stripe_len, plain) != section.plain_sha256 {
            return Err(ContainerError::Corrupt(format!("the {} section does not match its digest", kind.name())));
        }
        Ok(())
    };
    let model = container.open_section(sealer.as_ref(), SectionKind::Model)?;
    check_hash(SectionKind::Model, &model)?;
    crate::embed::check_model_section(&model, version).map_err(|_| {
        ContainerError::Corrupt("the model section is malformed: its bytes are not a valid model".into())
    })?;
    let index_bytes = container.open_section(sealer.as_ref(), SectionKind::Index)?;
    check_hash(SectionKind::Index, &index_bytes)?;
    let index_bytes = crate::schema::upgrade_index(index_bytes, version)
        .map_err(|e| ContainerError::Corrupt(format!("the index section is malformed: {e}")))?;
    let index = rkyv::access::<ArchivedIndex, rancor::Error>(&index_bytes).map_err(|_| {
        ContainerError::Corrupt("the index section is malformed: its bytes are not a valid index".into())
    })?;
    for_each_text_block(container, sealer.as_ref(), index, |_, _| Ok(()))?;
    // The persona section (format v6, optional): decrypted, digest-checked, validated.
    container.persona(sealer.as_ref())?;
    let sources = container.sources(sealer.as_ref())?.sources;
    if index.chunks.iter().any(|c| c.source.to_native() as usize >= sources.len()) {
        return Err(ContainerError::Corrupt("a chunk names a source the artifact does not list".into()));
    }
    Ok(VerifyReport { deep: true, text_blocks: index.blocks.len() })
}

/// Everything `lorec diff` compares of one artifact: its chunk records in artifact order, and
/// its fusion parameters. Every section it reads is decrypted and digest-checked.
#[derive(Debug, Clone)]
pub struct Contents {
    pub chunks: Vec<crate::schema::ChunkRecord>,
    pub fusion: crate::schema::FusionParams,
    pub facet_weight: f32,
}

/// Read every chunk record (and the fusion profile) of an artifact.
pub fn read_contents(container: &OpenedContainer<'_>, key: Option<&Key>) -> Result<Contents, ContainerError> {
    let sealer = container.sealer(key)?;
    let version = container.format_version;
    let index_bytes = container.open_section(sealer.as_ref(), SectionKind::Index)?;
    let index_section = container.section(SectionKind::Index);
    if crate::container::plaintext_digest(version, index_section.stripe_len, &index_bytes) != index_section.plain_sha256
    {
        return Err(ContainerError::Corrupt("the index section does not match its digest".into()));
    }
    let index_bytes = crate::schema::upgrade_index(index_bytes, version)
        .map_err(|e| ContainerError::Corrupt(format!("the index section is malformed: {e}")))?;
    let index = rkyv::access::<ArchivedIndex, rancor::Error>(&index_bytes).map_err(|_| {
        ContainerError::Corrupt("the index section is malformed: its bytes are not a valid index".into())
    })?;
    let fusion = rkyv::deserialize::<crate::schema::FusionParams, rancor::Error>(&index.fusion)
        .map_err(|_| ContainerError::Corrupt("the fusion parameters are malformed".into()))?;
    let mut chunks = Vec::with_capacity(index.chunks.len());
    for_each_text_block(container, sealer.as_ref(), index, |i, archived| {
        let block = rkyv::deserialize::<crate::schema::TextBlock, rancor::Error>(archived)
            .map_err(|_| ContainerError::Corrupt(format!("text block {i} is malformed")))?;
        chunks.extend(block.chunks);
        Ok(())
    })?;
    Ok(Contents { chunks, fusion, facet_weight: index.facet_weight.to_native() })
}

/// Open every text block the index names (decrypted, decompressed, validated), hand each to
/// `visit`, and check the texts section's digest over all of them.
fn for_each_text_block(
    container: &OpenedContainer<'_>,
    sealer: Option<&crate::seal::Sealer>,
    index: &ArchivedIndex,
    mut visit: impl FnMut(usize, &ArchivedTextBlock) -> Result<(), ContainerError>,
) -> Result<(), ContainerError> {
    let texts = container.raw_section(SectionKind::Texts);
    let texts_section = container.section(SectionKind::Texts);
    let mut hasher = SectionHasher::for_version(container.format_version);
    for (i, block) in index.blocks.iter().enumerate() {
        let start = usize::try_from(block.offset.to_native()).unwrap_or(usize::MAX);
        let raw = start
            .checked_add(block.stored_len.to_native() as usize)
            .and_then(|end| texts.get(start..end))
            .ok_or_else(|| ContainerError::Corrupt(format!("text block {i} lies outside the texts section")))?;
        let compression = match block.compression {
            crate::schema::ArchivedCompression::None => crate::Compression::None,
            crate::schema::ArchivedCompression::Zstd => crate::Compression::Zstd,
        };
        let plain = crate::container::open_unit(
            sealer,
            SectionKind::Texts,
            i as u64,
            raw,
            texts_section.encrypted,
            compression,
            block.plain_len.to_native() as usize,
        )?;
        hasher.unit(&plain);
        let archived = rkyv::access::<ArchivedTextBlock, rancor::Error>(&plain).map_err(|_| {
            ContainerError::Corrupt(format!("text block {i} is malformed: its bytes are not a valid block"))
        })?;
        visit(i, archived)?;
    }
    if hasher.finish() != texts_section.plain_sha256 {
        return Err(ContainerError::Corrupt("the texts section does not match its digest".into()));
    }
    Ok(())
}
