//! Vigil's data model, shared by every layer: the sources and where a
//! message came from ([`source`]), the metadata a rule declares in its
//! header ([`rule`]), and what Vigil writes: alerts ([`alert`]) and dead
//! letters ([`dead_letter`]).
//!
//! It depends on no query engine, runtime or client: every other crate of
//! the workspace depends on it, and it on none of them.

pub mod alert;
pub mod dead_letter;
pub mod fit;
pub mod forward;
pub mod rule;
pub mod source;
