//! Value types that validate themselves while being deserialized, so that a
//! bad value is reported by toml with the span of that value (file, line and
//! column) instead of somewhere after the fact.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An inclusive range of TCP/UDP port numbers, `start..=end`, never port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// A range; `None` when it contains port 0 or `start > end`.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(Self { start, end })
    }

    /// A single port; `None` for port 0.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    pub fn start(&self) -> u16 {
        self.start
    }

    pub fn end(&self) -> u16 {
        self.end
    }

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// One port number as written inside a string, already known to be ASCII
/// digits only. Leading zeros are refused (`"080"` reads like octal or a
/// typo; ports are written as Docker prints them).
fn parse_port_number(text: &str) -> Result<u16, String> {
    let significant = text.trim_start_matches('0');
    if significant.len() > 5 {
        return Err(format!(
            "port {text} is out of range: expected a number from 1 to 65535"
        ));
    }
    // At most five significant ASCII digits: always fits.
    let value: u64 = significant
        .bytes()
        .fold(0, |n, b| n * 10 + u64::from(b - b'0'));
    if significant.len() < text.len() && value != 0 {
        return Err(format!("`{text}` has a leading zero: write {value}"));
    }
    check_port_number(value)
}

fn check_port_number(value: u64) -> Result<u16, String> {
    match u16::try_from(value) {
        Ok(0) | Err(_) => Err(format!(
            "port {value} is out of range: expected a number from 1 to 65535"
        )),
        Ok(port) => Ok(port),
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `"N"` or `"N-M"`, ASCII digits only: no spaces, signs or other
    /// characters anywhere, so what is read is exactly what is written.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (start, end) = match text.split_once('-') {
            Some((lo, hi)) if digits(lo) && digits(hi) => {
                (parse_port_number(lo)?, parse_port_number(hi)?)
            }
            None if digits(text) => {
                let port = parse_port_number(text)?;
                (port, port)
            }
            _ => {
                return Err(format!(
                    "`{text}` is not a port or port range: write \"N\" or \"N-M\" with digits only \
                     (no spaces, signs or other characters)"
                ));
            }
        };
        PortRange::new(start, end).ok_or_else(|| {
            format!("port range `{text}` is reversed: expected \"low-high\" with low <= high")
        })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a range string such as \"40000-40100\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "port {v} is out of range: expected a number from 1 to 65535"
                    )));
                }
                self.visit_u64(v as u64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                let port = check_port_number(v).map_err(E::custom)?;
                Ok(PortRange {
                    start: port,
                    end: port,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An IPv4 or IPv6 network in CIDR notation (`203.0.113.0/24`,
/// `2001:db8::/32`); a bare address means a single host. Host bits must be
/// zero, so that what is written is what is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// First and last address as integers (IPv4 in the low 32 bits).
    pub fn bounds(&self) -> (u128, u128) {
        let (value, width) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let host_bits = width - u32::from(self.prefix);
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        (value & !mask, value | mask)
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let value = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(a)) => u128::from(u32::from(a)),
            (IpAddr::V6(_), IpAddr::V6(a)) => u128::from(a),
            _ => return false,
        };
        let (lo, hi) = self.bounds();
        lo <= value && value <= hi
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{text}` is not an IPv4 or IPv6 address or CIDR network");
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => width,
            Some(p) => {
                // Digits only: `u8::from_str` would also take `+24`.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = p.parse().map_err(|_| bad())?;
                if prefix > width {
                    return Err(format!(
                        "`{text}`: prefix length {prefix} is longer than {width} bits"
                    ));
                }
                prefix
            }
        };
        // An IPv4-mapped IPv6 network (`::ffff:203.0.113.0/120`) never
        // matches: IPv4 packets carry IPv4 addresses, and the kernel does not
        // map them. Refuse it and name the IPv4 network to write instead.
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            let ipv4 = if prefix == 128 {
                v4.to_string()
            } else {
                format!("{v4}/{}", prefix - 96)
            };
            return Err(format!(
                "`{text}` is an IPv4-mapped IPv6 address, which never matches IPv4 traffic: \
                 write `{ipv4}` instead"
            ));
        }
        let cidr = Cidr { addr, prefix };
        let (lo, _) = cidr.bounds();
        let network = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(lo as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(lo)),
        };
        // Host bits set under the prefix: the network is ambiguous to a reader.
        let host_bits_mask = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) != lo,
            IpAddr::V6(a) => u128::from(a) != lo,
        };
        if host_bits_mask {
            return Err(format!(
                "`{text}` has host bits set: did you mean {network}/{prefix}?"
            ));
        }
        Ok(cidr)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A network interface name as the kernel knows it (1-15 bytes, no `/`,
/// white space or quotes). A trailing `*` makes it a prefix match
/// (`"wg*"` matches `wg0`, `wg1`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix before a trailing `*`, if this name is a wildcard.
    pub fn wildcard_prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }

    /// Whether this (possibly wildcard) name matches the interface `name`.
    pub fn matches(&self, name: &str) -> bool {
        match self.wildcard_prefix() {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IfName {
    type Err = String;

    /// What the kernel accepts as a name (`dev_valid_name`: 1-15 bytes,
    /// not `.` or `..`, no `/`, `:` or white space), further limited to
    /// printable ASCII without quotes or backslashes so that every name can
    /// be shown and written in nft syntax as it is. A trailing `*` makes
    /// the name a prefix match; whether that is allowed is up to the key.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // IFNAMSIZ is 16 including the terminating NUL.
        const MAX_LEN: usize = 15;
        let body = text.strip_suffix('*').unwrap_or(text);
        if body.is_empty() {
            return Err("an interface name must not be empty".to_string());
        }
        if body.len() > MAX_LEN {
            return Err(format!(
                "interface name `{}` is longer than {MAX_LEN} bytes",
                text.escape_debug()
            ));
        }
        if body == "." || body == ".." {
            return Err(format!("`{text}` is not an interface name"));
        }
        if let Some(c) = body
            .chars()
            .find(|&c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '"' | '\'' | '\\' | '*'))
        {
            return Err(format!(
                "interface name `{}` contains {c:?}: interface names are printable ASCII \
                 without `/`, `:`, quotes, backslashes or white space; only a trailing `*` \
                 wildcard is allowed",
                text.escape_debug()
            ));
        }
        Ok(IfName(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for IfName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserializes a string that must be one of `names` and returns its index.
/// Anything else, another string or a value of another type (`mode = 5`,
/// a table), is an error listing every allowed value:
/// ``invalid type: integer `5`, expected `enforce` or `audit` ``.
pub(crate) fn deserialize_one_of<'de, D: Deserializer<'de>>(
    deserializer: D,
    names: &'static [&'static str],
) -> Result<usize, D::Error> {
    struct OneOf(&'static [&'static str]);
    impl Visitor<'_> for OneOf {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&choices(self.0))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            self.0.iter().position(|name| *name == v).ok_or_else(|| {
                E::custom(format!(
                    "unknown variant `{}`, expected {}",
                    v.escape_debug(),
                    choices(self.0)
                ))
            })
        }
    }
    deserializer.deserialize_str(OneOf(names))
}

/// `` `a` or `b` `` / `` one of `a`, `b`, `c` ``, as serde words it.
fn choices(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_reject() {
        assert_eq!("8080".parse(), Ok(PortRange::single(8080).unwrap()));
        assert_eq!("1-2".parse(), Ok(PortRange::new(1, 2).unwrap()));
        assert!(
            "0".parse::<PortRange>()
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            "65536"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("out of range")
        );
        assert!("9-8".parse::<PortRange>().unwrap_err().contains("reversed"));
        assert!("x".parse::<PortRange>().unwrap_err().contains("not a port"));
    }

    #[test]
    fn cidrs_parse_bounds_and_reject_host_bits() {
        let c: Cidr = "203.0.113.0/24".parse().unwrap();
        assert_eq!(c.bounds(), (0xCB007100, 0xCB0071FF));
        assert!(c.contains("203.0.113.9".parse().unwrap()));
        assert!(!c.contains("203.0.114.9".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert_eq!(all6.bounds(), (0, u128::MAX));
        let host: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(host.prefix(), 128);
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn interface_names() {
        let wg: IfName = "wg*".parse().unwrap();
        assert!(wg.matches("wg0") && !wg.matches("eth0"));
        assert!("eth0".parse::<IfName>().unwrap().matches("eth0"));
        assert!("a-very-long-interface".parse::<IfName>().is_err());
        assert!("et h0".parse::<IfName>().is_err());
        assert!("e*th".parse::<IfName>().is_err());
        assert!("".parse::<IfName>().is_err());
    }
}
