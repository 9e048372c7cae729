//! Vigil's sources: what each kind of event stream is (the [`registry`]),
//! the declared Arrow schema of its table ([`schema`]) and the decoder that
//! turns its raw messages into record batches ([`decode`]), with the input
//! limits that keep hostile input bounded. No query engine, runtime or
//! client.
//!
//! One folder per source (`k8s_audit/`, `falco/`, `tetragon/`), each with
//! its `SPEC`, and one line per source in the list below.

pub mod decode;
pub mod json;
pub mod registry;
pub mod schema;

pub use registry::SourceSpec;

/// Declares each source folder as a module and lists its `SPEC`.
macro_rules! registry {
    ($($source:ident),* $(,)?) => {
        $(pub mod $source;)*
        /// Every source Vigil reads, in a stable order.
        static SOURCES: &[&SourceSpec] = &[$(&$source::SPEC),*];
    };
}

registry! {
    k8s_audit,
    falco,
    tetragon,
}
