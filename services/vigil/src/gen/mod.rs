//! `vigil gen`: the generator (crate `vigil-gen`), and producing its events
//! to the source topics ([`produce`]).

pub mod produce;

pub use vigil_gen::*;

#[cfg(test)]
mod tests;
