//! IP address functions for rules over network data.
//!
//! * `cidr_contains(networks, ip)`: whether `ip` is in one of `networks`,
//!   a string (`'10.0.0.0/8'`, or one address) or a list of them
//!   (`list('cluster_networks')`, `make_array(...)`). IPv4-mapped IPv6
//!   addresses (`::ffff:10.1.2.3`) count as their IPv4 address.
//! * `ip_is_private(ip)`: an address for internal use: RFC 1918, shared
//!   (CGNAT, 100.64.0.0/10), loopback, link-local, IPv6 unique-local.
//! * `ip_is_public(ip)`: a globally routable address: IPv4 outside the
//!   private, reserved, documentation, benchmarking and multicast blocks;
//!   IPv6 global unicast (2000::/3) outside documentation (2001:db8::/32).
//!
//! An `ip` that is NULL or not an address gives NULL. A malformed network
//! in a literal or a list is an error where the rule is planned
//! (`definitions::expand`); one read from a column matches nothing.

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use crate::Error;

/// An address range, inclusive, in one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

/// Parse `a.b.c.d/n`, `x::y/n` or a single address (a /32 or /128).
pub fn parse_network(s: &str) -> Result<(IpAddr, u8), Error> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|source| Error::NetworkAddress {
        network: s.to_string(),
        source,
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(Error::NetworkPrefix {
                    network: s.to_string(),
                    max,
                })
            }
        },
    };
    Ok((addr, prefix))
}

fn range_of(addr: IpAddr, prefix: u8) -> Range {
    match addr {
        IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
            let v4 = v6.to_ipv4_mapped().expect("checked");
            range_of(IpAddr::V4(v4), prefix - 96)
        }
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(prefix as u32).unwrap_or(0);
            let bits = u32::from(a);
            Range::V4(bits & !host, bits | host)
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(prefix as u32).unwrap_or(0);
            let bits = u128::from(a);
            Range::V6(bits & !host, bits | host)
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok().map(canonical)
}

/// A set of networks, sorted for binary search.
#[derive(Debug, Default)]
pub struct Networks {
    ranges: Vec<Range>,
}

impl Networks {
    /// The networks of `items`; malformed ones are skipped.
    pub fn new<'a>(items: impl IntoIterator<Item = &'a str>) -> Networks {
        let mut ranges: Vec<Range> = items
            .into_iter()
            .filter_map(|s| parse_network(s.trim()).ok())
            .map(|(a, p)| range_of(a, p))
            .collect();
        ranges.sort();
        // Merge overlapping and nested ranges, so that the ranges are
        // disjoint and only the last one starting at or before an address
        // can hold it.
        let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match (merged.last_mut(), r) {
                (Some(Range::V4(_, hi)), Range::V4(lo, h)) if lo <= hi.saturating_add(1) => {
                    *hi = (*hi).max(h)
                }
                (Some(Range::V6(_, hi)), Range::V6(lo, h)) if lo <= hi.saturating_add(1) => {
                    *hi = (*hi).max(h)
                }
                _ => merged.push(r),
            }
        }
        Networks { ranges: merged }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let probe = match canonical(ip) {
            IpAddr::V4(a) => Range::V4(u32::from(a), u32::MAX),
            IpAddr::V6(a) => Range::V6(u128::from(a), u128::MAX),
        };
        let end = self.ranges.partition_point(|r| *r <= probe);
        match (end.checked_sub(1).map(|i| self.ranges[i]), probe) {
            (Some(Range::V4(lo, hi)), Range::V4(x, _)) => lo <= x && x <= hi,
            (Some(Range::V6(lo, hi)), Range::V6(x, _)) => lo <= x && x <= hi,
            _ => false,
        }
    }
}

const PRIVATE: [&str; 10] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
    "0.0.0.0/32",
];

const NOT_PUBLIC_V4: [&str; 8] = [
    "0.0.0.0/8",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

fn private_networks() -> &'static Networks {
    static N: std::sync::OnceLock<Networks> = std::sync::OnceLock::new();
    N.get_or_init(|| Networks::new(PRIVATE))
}

/// Whether `ip` is for internal use (see the module doc).
pub fn is_private(ip: IpAddr) -> bool {
    private_networks().contains(ip)
}

/// Whether `ip` is globally routable (see the module doc).
pub fn is_public(ip: IpAddr) -> bool {
    static N: std::sync::OnceLock<Networks> = std::sync::OnceLock::new();
    let reserved =
        N.get_or_init(|| Networks::new(NOT_PUBLIC_V4.iter().copied().chain(["2001:db8::/32"])));
    match canonical(ip) {
        IpAddr::V4(_) => !is_private(ip) && !reserved.contains(ip),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xe000) == 0x2000 && !reserved.contains(ip),
    }
}

/// `ip_is_private(ip)` / `ip_is_public(ip)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IpClass {
    name: &'static str,
    public: bool,
    signature: Signature,
}

impl IpClass {
    pub fn private() -> Self {
        Self::new("ip_is_private", false)
    }
    pub fn public() -> Self {
        Self::new("ip_is_public", true)
    }
    fn new(name: &'static str, public: bool) -> Self {
        IpClass {
            name,
            public,
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for IpClass {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (ips, scalar) = strings(&args.args[0], args.number_rows)?;
        let mut out = BooleanBuilder::with_capacity(ips.len());
        for i in 0..ips.len() {
            match ips.is_valid(i).then(|| parse_ip(ips.value(i))).flatten() {
                Some(ip) => out.append_value(if self.public {
                    is_public(ip)
                } else {
                    is_private(ip)
                }),
                None => out.append_null(),
            }
        }
        finish(Arc::new(out.finish()), scalar)
    }
}

/// `cidr_contains(networks, ip)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CidrContains {
    signature: Signature,
}

impl Default for CidrContains {
    fn default() -> Self {
        let list = DataType::new_list(DataType::Utf8, true);
        CidrContains {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![list, DataType::Utf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for CidrContains {
    fn name(&self) -> &str {
        "cidr_contains"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (ips, ip_scalar) = strings(&args.args[1], args.number_rows)?;
        let mut out = BooleanBuilder::with_capacity(ips.len());
        let test = |networks: &Networks, i: usize, out: &mut BooleanBuilder| match ips
            .is_valid(i)
            .then(|| parse_ip(ips.value(i)))
            .flatten()
        {
            Some(ip) => out.append_value(networks.contains(ip)),
            None => out.append_null(),
        };
        match &args.args[0] {
            // The usual case: the same networks for every row, parsed once.
            ColumnarValue::Scalar(s) => {
                let networks = match s {
                    ScalarValue::Utf8(v) => Networks::new(v.as_deref()),
                    ScalarValue::List(list) if list.len() == 1 && list.is_valid(0) => {
                        let values = list.value(0);
                        let values = values.as_string::<i32>();
                        Networks::new(values.iter().flatten())
                    }
                    ScalarValue::List(_) | ScalarValue::Null => Networks::default(),
                    other => return exec_err!("cidr_contains: unexpected networks {other:?}"),
                };
                for i in 0..ips.len() {
                    test(&networks, i, &mut out);
                }
                finish(Arc::new(out.finish()), ip_scalar)
            }
            ColumnarValue::Array(a) => {
                for i in 0..ips.len() {
                    let networks = network_row(a, i);
                    test(&networks, i, &mut out);
                }
                finish(Arc::new(out.finish()), false)
            }
        }
    }
}

/// The networks of row `i` of a string or list-of-strings column.
fn network_row(a: &ArrayRef, i: usize) -> Networks {
    if a.is_null(i) {
        return Networks::default();
    }
    match a.data_type() {
        DataType::Utf8 => Networks::new([a.as_string::<i32>().value(i)]),
        _ => {
            let values = a.as_list::<i32>().value(i);
            let values = values.as_string::<i32>();
            Networks::new(values.iter().flatten())
        }
    }
}

/// A string argument as an array, and whether it was a scalar.
fn strings(v: &ColumnarValue, rows: usize) -> Result<(StringArray, bool)> {
    let (array, scalar) = match v {
        ColumnarValue::Array(a) => (a.clone(), false),
        ColumnarValue::Scalar(s) => (s.to_array_of_size(rows.max(1))?, true),
    };
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok((array.as_string::<i32>().clone(), scalar))
}

fn finish(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        parse_ip(s).unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let n = Networks::new([
            "10.0.0.0/8",
            "192.168.1.0/24",
            "2001:db8::/32",
            "203.0.113.7",
        ]);
        assert!(n.contains(ip("10.255.1.2")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("192.168.1.200")));
        assert!(!n.contains(ip("192.168.2.1")));
        assert!(n.contains(ip("2001:db8::1")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(n.contains(ip("203.0.113.7")));
        assert!(!n.contains(ip("203.0.113.8")));
        // an IPv4-mapped IPv6 address is its IPv4 address
        assert!(n.contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn nested_and_overlapping_networks() {
        let n = Networks::new(["10.0.0.0/8", "10.1.0.0/16", "10.200.0.0/16"]);
        assert!(n.contains(ip("10.1.5.5")));
        assert!(
            n.contains(ip("10.150.0.1")),
            "inside the /8 after a nested /16"
        );
        assert!(n.contains(ip("10.200.0.1")));
        let everything = Networks::new(["0.0.0.0/0"]);
        assert!(everything.contains(ip("8.8.8.8")));
        assert!(!everything.contains(ip("2001:4860::8888")));
    }

    #[test]
    fn malformed_networks_are_refused() {
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("10.0.0/8").is_err());
        assert!(parse_network("fe80::/129").is_err());
        assert!(parse_network("example.com").is_err());
        assert_eq!(parse_network("10.1.2.3").unwrap().1, 32);
        assert_eq!(
            parse_network("fe80::/129").unwrap_err().to_string(),
            "invalid network \"fe80::/129\": the prefix length must be 0 to 128"
        );
        let e = parse_network("10.0.0/8").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid network \"10.0.0/8\": expected an IP address or CIDR, e.g. 10.0.0.0/8"
        );
        assert!(
            std::error::Error::source(&e).is_some(),
            "the address's parse error is kept"
        );
    }

    #[test]
    fn private_and_public() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(is_private(ip(private)), "{private}");
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "52.94.1.1",
            "2001:4860::8888",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip(public)), "{public}");
            assert!(!is_private(ip(public)), "{public}");
        }
        for neither in [
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "198.18.0.1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip(neither)), "{neither}");
            assert!(!is_private(ip(neither)), "{neither}");
        }
    }
}
