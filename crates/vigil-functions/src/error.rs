//! Errors of the functions' arguments that the engine checks before a rule
//! is planned (a network literal of `cidr_contains`, a network list item).
//! Errors while a function runs are DataFusion's (`exec_err!`), as every
//! scalar UDF's are.

use std::net::AddrParseError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The part before the `/` is not an IPv4 or IPv6 address.
    #[error("invalid network {network:?}: expected an IP address or CIDR, e.g. 10.0.0.0/8")]
    NetworkAddress {
        network: String,
        #[source]
        source: AddrParseError,
    },
    /// The prefix length is not a number from 0 to the address's bits.
    #[error("invalid network {network:?}: the prefix length must be 0 to {max}")]
    NetworkPrefix { network: String, max: u8 },
}
