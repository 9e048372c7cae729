//! Vigil's sources: the declared Arrow schema of each source table
//! ([`schema`]) and the decoders that turn raw messages into record
//! batches of it ([`decode`]), with the input limits that keep hostile
//! input bounded. No query engine, runtime or client.

pub mod decode;
pub mod schema;
