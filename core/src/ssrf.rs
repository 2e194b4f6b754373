//! SSRF defence for every URL the gateway fetches: a strict URL parser and a
//! classifier for the destination host. Pure: no DNS, no I/O.
//!
//! The parser is deliberately narrower than a browser's. It accepts `http` and `https`
//! URLs with a plain host (a DNS name, an IPv4 address, or a bracketed IPv6 literal) and
//! an optional port, and refuses everything that different parsers disagree on, so the
//! host we check is the host the runtime's `fetch` connects to:
//!
//! * userinfo (`http://a@b/`, `http://a:b@c/`) is refused outright: it is the classic way
//!   to make a checker and a fetcher see different hosts;
//! * backslashes, whitespace, control characters, percent-encoding and non-ASCII in the
//!   authority are refused (IDNs must arrive as punycode);
//! * IPv4 is read the way WHATWG URL parsers read it, so `2130706433`, `0x7f.1`,
//!   `0177.0.0.1` and `127.1` are all recognised as 127.0.0.1 and classified as such;
//! * a trailing dot (`localhost.`) and upper case are normalised before checks;
//! * IPv4-mapped / compatible / NAT64 / 6to4 IPv6 forms are classified by the IPv4
//!   address they embed.
//!
//! Names are checked against a small list of names that always mean "this machine" or
//! "the cloud's metadata service". A DNS name that *resolves* to a private address
//! cannot be detected here (a Worker has no DNS API); the primary control for the
//! pass-through proxy is the operator's domain allow-list (see `docs/security.md`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// URL scheme the gateway may fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The host part of a URL, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// Lower case, no trailing dot.
    Domain(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
            Host::Domain(d) => f.write_str(d),
        }
    }
}

/// A parsed, normalised URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub scheme: Scheme,
    pub host: Host,
    /// The effective port (the scheme's default when none was given).
    pub port: u16,
    /// Whether the URL named the port explicitly.
    pub explicit_port: bool,
    /// Path, query and fragment as given, starting with `/` (or empty).
    pub rest: String,
}

impl ParsedUrl {
    /// `host` or `host:port` when the port is explicit and not the scheme's default.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What kind of address an IP literal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpClass {
    /// Globally routable.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10.
    Private,
    /// 169.254/16 (incl. the 169.254.169.254 metadata service), fe80::/10.
    LinkLocal,
    /// 100.64/10 (carrier-grade NAT; also where some clouds put metadata services).
    SharedAddressSpace,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224/4, ff00::/8.
    Multicast,
    /// 240/4, 255.255.255.255, documentation, benchmarking and IETF protocol ranges,
    /// Teredo, IPv6 documentation.
    Reserved,
}

/// Why a URL is refused. Messages name the reason, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("URL is malformed: {0}")]
    Malformed(&'static str),
    #[error("URL scheme must be http or https")]
    Scheme,
    #[error("URLs with user credentials (`user@host`) are not allowed")]
    UserInfo,
    #[error("destination address is not allowed ({0:?} address)")]
    BlockedAddress(IpClass),
    #[error("destination host `{0}` is not allowed")]
    BlockedName(String),
}

/// What the caller permits beyond public destinations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    /// Local mode: permit exactly `127.0.0.1`, `[::1]` and `localhost` (e.g. a mock
    /// upstream on loopback). Never set in production.
    pub allow_loopback: bool,
}

/// Parses `url` and refuses destinations that are not public (see the module docs).
pub fn check_url(url: &str, policy: SsrfPolicy) -> Result<ParsedUrl, SsrfError> {
    let parsed = parse_url(url)?;
    check_host(&parsed.host, policy)?;
    Ok(parsed)
}

/// Refuses a host that is not public under `policy`.
pub fn check_host(host: &Host, policy: SsrfPolicy) -> Result<(), SsrfError> {
    match host {
        Host::Ipv4(a) => {
            if policy.allow_loopback && *a == Ipv4Addr::LOCALHOST {
                return Ok(());
            }
            match classify_ipv4(*a) {
                IpClass::Public => Ok(()),
                class => Err(SsrfError::BlockedAddress(class)),
            }
        }
        Host::Ipv6(a) => {
            if policy.allow_loopback && *a == Ipv6Addr::LOCALHOST {
                return Ok(());
            }
            match classify_ipv6(*a) {
                IpClass::Public => Ok(()),
                class => Err(SsrfError::BlockedAddress(class)),
            }
        }
        Host::Domain(name) => {
            if policy.allow_loopback && name == "localhost" {
                return Ok(());
            }
            if is_blocked_name(name) {
                Err(SsrfError::BlockedName(name.clone()))
            } else {
                Ok(())
            }
        }
    }
}

/// Names that always point at this machine, the local network or a metadata service,
/// and wildcard DNS services that map any name to an embedded (often private) address.
const BLOCKED_NAMES: &[&str] = &[
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "kubernetes.default",
    "kubernetes.default.svc",
];

const BLOCKED_SUFFIXES: &[&str] = &[
    ".localhost",
    ".internal",
    ".local",
    ".localdomain",
    ".home.arpa",
    ".arpa",
    ".cluster.local",
    ".svc",
    // wildcard DNS that resolves `10.0.0.1.nip.io` to 10.0.0.1 and the like
    ".nip.io",
    ".sslip.io",
    ".xip.io",
    ".localtest.me",
    ".lvh.me",
];

fn is_blocked_name(name: &str) -> bool {
    BLOCKED_NAMES.contains(&name)
        || BLOCKED_SUFFIXES
            .iter()
            .any(|s| name.ends_with(s) || s.strip_prefix('.') == Some(name))
}

/// Classifies an IPv4 address.
pub fn classify_ipv4(a: Ipv4Addr) -> IpClass {
    let [o0, o1, o2, _] = a.octets();
    let n = u32::from(a);
    let in_net = |net: u32, bits: u32| (n >> (32 - bits)) == (net >> (32 - bits));
    match () {
        _ if o0 == 0 => IpClass::Unspecified,
        _ if o0 == 127 => IpClass::Loopback,
        _ if o0 == 10 => IpClass::Private,
        _ if o0 == 172 && (16..=31).contains(&o1) => IpClass::Private,
        _ if o0 == 192 && o1 == 168 => IpClass::Private,
        _ if o0 == 169 && o1 == 254 => IpClass::LinkLocal,
        _ if in_net(0x6440_0000, 10) => IpClass::SharedAddressSpace,
        _ if (224..=239).contains(&o0) => IpClass::Multicast,
        _ if o0 >= 240 => IpClass::Reserved,
        // 192.0.0.0/24 IETF protocol assignments, 192.0.2.0/24, 198.51.100.0/24,
        // 203.0.113.0/24 documentation, 198.18.0.0/15 benchmarking.
        _ if o0 == 192 && o1 == 0 && (o2 == 0 || o2 == 2) => IpClass::Reserved,
        _ if o0 == 198 && o1 == 51 && o2 == 100 => IpClass::Reserved,
        _ if o0 == 203 && o1 == 0 && o2 == 113 => IpClass::Reserved,
        _ if in_net(0xC612_0000, 15) => IpClass::Reserved,
        _ => IpClass::Public,
    }
}

/// Classifies an IPv6 address; forms that embed an IPv4 address are classified by it.
pub fn classify_ipv6(a: Ipv6Addr) -> IpClass {
    let s = a.segments();
    let [s0, s1, s2, s3, s4, s5, s6, s7] = s;
    let embedded = Ipv4Addr::new((s6 >> 8) as u8, s6 as u8, (s7 >> 8) as u8, s7 as u8);
    if a.is_unspecified() {
        return IpClass::Unspecified;
    }
    if a.is_loopback() {
        return IpClass::Loopback;
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated)
    if s0 == 0 && s1 == 0 && s2 == 0 && s3 == 0 && s4 == 0 && (s5 == 0xffff || s5 == 0) {
        return classify_ipv4(embedded);
    }
    // 64:ff9b::/96 NAT64 well-known prefix, 64:ff9b:1::/48 local-use NAT64
    if s0 == 0x64 && s1 == 0xff9b {
        return match s2 {
            0 => classify_ipv4(embedded),
            _ => IpClass::Reserved,
        };
    }
    // 2002::/16 6to4: the IPv4 address is in segments 1 and 2
    if s0 == 0x2002 {
        let v4 = Ipv4Addr::new((s1 >> 8) as u8, s1 as u8, (s2 >> 8) as u8, s2 as u8);
        return classify_ipv4(v4);
    }
    match () {
        _ if s0 & 0xfe00 == 0xfc00 => IpClass::Private,
        _ if s0 & 0xffc0 == 0xfec0 => IpClass::Private,
        _ if s0 & 0xffc0 == 0xfe80 => IpClass::LinkLocal,
        _ if s0 & 0xff00 == 0xff00 => IpClass::Multicast,
        // 2001:db8::/32 documentation, 2001::/32 Teredo, 100::/64 discard
        _ if s0 == 0x2001 && (s1 == 0x0db8 || s1 == 0) => IpClass::Reserved,
        _ if s0 == 0x0100 && s1 == 0 && s2 == 0 && s3 == 0 => IpClass::Reserved,
        // Anything outside 2000::/3 is not global unicast.
        _ if s0 & 0xe000 != 0x2000 => IpClass::Reserved,
        _ => IpClass::Public,
    }
}

/// Parses an absolute `http`/`https` URL strictly (see the module docs).
pub fn parse_url(url: &str) -> Result<ParsedUrl, SsrfError> {
    if url.len() > 8192 {
        return Err(SsrfError::Malformed("too long"));
    }
    if url
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(SsrfError::Malformed(
            "contains whitespace, control characters or backslashes",
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or(SsrfError::Malformed("missing scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(SsrfError::Scheme),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(SsrfError::UserInfo);
    }
    if authority.is_empty() {
        return Err(SsrfError::Malformed("empty host"));
    }
    let (host_str, port_str) = split_host_port(authority)?;
    let host = parse_host(host_str)?;
    let (port, explicit_port) = match port_str {
        None => (scheme.default_port(), false),
        Some(p) => (parse_port(p)?, true),
    };
    Ok(ParsedUrl {
        scheme,
        host,
        port,
        explicit_port,
        rest: tail.to_owned(),
    })
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), SsrfError> {
    if let Some(inner) = authority.strip_prefix('[') {
        let close = inner
            .find(']')
            .ok_or(SsrfError::Malformed("unterminated IPv6 literal"))?;
        let after = inner.get(close + 1..).unwrap_or("");
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or(SsrfError::Malformed("junk after IPv6 literal"))?,
            ),
        };
        // Keep the brackets so parse_host knows it is an IPv6 literal.
        let with_brackets = authority
            .get(..close + 2)
            .ok_or(SsrfError::Malformed("bad IPv6 literal"))?;
        return Ok((with_brackets, port));
    }
    match authority.matches(':').count() {
        0 => Ok((authority, None)),
        1 => {
            let (h, p) = authority
                .split_once(':')
                .ok_or(SsrfError::Malformed("bad port"))?;
            Ok((h, Some(p)))
        }
        _ => Err(SsrfError::Malformed("IPv6 literals must be in brackets")),
    }
}

fn parse_port(p: &str) -> Result<u16, SsrfError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SsrfError::Malformed("bad port"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(SsrfError::Malformed("bad port")),
        Ok(n) => Ok(n),
    }
}

/// Parses a host: a bracketed IPv6 literal, an IPv4 address in any WHATWG form, or a
/// DNS name (normalised to lower case without a trailing dot).
pub fn parse_host(host: &str) -> Result<Host, SsrfError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(SsrfError::Malformed("bad IPv6 literal"))?;
        if inner.contains('%') {
            return Err(SsrfError::Malformed("IPv6 zone ids are not allowed"));
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(Host::Ipv6)
            .map_err(|_| SsrfError::Malformed("bad IPv6 literal"));
    }
    if host.is_empty() {
        return Err(SsrfError::Malformed("empty host"));
    }
    if !host.is_ascii() {
        return Err(SsrfError::Malformed(
            "non-ASCII host (use the punycode form)",
        ));
    }
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 {
        return Err(SsrfError::Malformed("bad host name"));
    }
    if ends_in_number(name) {
        return parse_ipv4_whatwg(name)
            .map(Host::Ipv4)
            .ok_or(SsrfError::Malformed("bad IPv4 address"));
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SsrfError::Malformed("bad host name"));
        }
    }
    Ok(Host::Domain(name.to_owned()))
}

/// WHATWG's "ends in a number": the last label is all digits or a `0x` hex number.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// IPv4 as WHATWG URL parsers read it: 1 to 4 dot-separated parts, each decimal, octal
/// (leading `0`) or hex (`0x`); the last part fills the remaining bytes.
pub fn parse_ipv4_whatwg(name: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_ipv4_number(p)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let remaining_bytes = 5 - parts.len() as u32; // 4 parts -> 1 byte ... 1 part -> 4 bytes
    if *last >= 256u64.pow(remaining_bytes) {
        return None;
    }
    let mut value: u64 = *last;
    for (i, n) in init.iter().enumerate() {
        value += n << (8 * (3 - i as u32));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_number(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 32 {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = p.strip_prefix('0').filter(|o| !o.is_empty()) {
        (o, 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // `0x` alone is zero in WHATWG.
        return Some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: SsrfPolicy = SsrfPolicy {
        allow_loopback: false,
    };
    const LOCAL: SsrfPolicy = SsrfPolicy {
        allow_loopback: true,
    };

    fn blocked(url: &str) -> SsrfError {
        match check_url(url, STRICT) {
            Ok(p) => panic!("{url} should be refused, parsed as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn test_public_urls_parse_and_pass() {
        let p = check_url("https://api.openai.com/v1/chat/completions?x=1", STRICT).unwrap();
        assert_eq!(p.scheme, Scheme::Https);
        assert_eq!(p.host, Host::Domain("api.openai.com".into()));
        assert_eq!(p.port, 443);
        assert_eq!(p.rest, "/v1/chat/completions?x=1");
        let p = check_url("HTTP://API.Example.COM.:8080", STRICT).unwrap();
        assert_eq!(p.host, Host::Domain("api.example.com".into()));
        assert_eq!(p.port, 8080);
        assert_eq!(p.rest, "");
        assert_eq!(p.authority(), "api.example.com:8080");
        let p = check_url("https://8.8.8.8/x", STRICT).unwrap();
        assert_eq!(p.host, Host::Ipv4(Ipv4Addr::new(8, 8, 8, 8)));
        let p = check_url("https://[2606:4700::1111]:8443/", STRICT).unwrap();
        assert_eq!(p.port, 8443);
        assert_eq!(p.authority(), "[2606:4700::1111]:8443");
    }

    #[test]
    fn test_ipv4_literals_private_loopback_linklocal_cgnat_refused() {
        for (url, class) in [
            ("http://127.0.0.1/", IpClass::Loopback),
            ("http://127.255.0.9:81/", IpClass::Loopback),
            ("http://10.1.2.3/", IpClass::Private),
            ("http://172.16.0.1/", IpClass::Private),
            ("http://172.31.255.255/", IpClass::Private),
            ("http://192.168.1.1/", IpClass::Private),
            (
                "http://169.254.169.254/latest/meta-data/",
                IpClass::LinkLocal,
            ),
            ("http://100.64.0.1/", IpClass::SharedAddressSpace),
            ("http://100.127.255.254/", IpClass::SharedAddressSpace),
            ("http://0.0.0.0/", IpClass::Unspecified),
            ("http://0/", IpClass::Unspecified),
            ("http://224.0.0.1/", IpClass::Multicast),
            ("http://255.255.255.255/", IpClass::Reserved),
            ("http://192.0.2.1/", IpClass::Reserved),
            ("http://198.18.0.1/", IpClass::Reserved),
        ] {
            assert_eq!(blocked(url), SsrfError::BlockedAddress(class), "{url}");
        }
        // Neighbours of the private ranges are public.
        for url in [
            "http://172.15.255.255/",
            "http://172.32.0.0/",
            "http://100.63.255.255/",
            "http://100.128.0.0/",
            "http://169.253.0.1/",
            "http://11.0.0.1/",
        ] {
            assert!(check_url(url, STRICT).is_ok(), "{url}");
        }
    }

    #[test]
    fn test_numeric_ipv4_forms_are_normalised_then_refused() {
        for url in [
            "http://2130706433/",           // decimal
            "http://0x7f000001/",           // hex
            "http://0x7f.1/",               // hex + short form
            "http://0177.0.0.1/",           // octal
            "http://0177.1/",               // octal short
            "http://127.1/",                // short form
            "http://127.0.1/",              // three parts
            "http://0x7F.0.0.0x1/",         // mixed
            "http://017700000001/",         // octal 32-bit
            "http://127.0.0.1./",           // trailing dot
            "http://0x7f.0x0.0x0.0x1:8080", // hex parts with port
        ] {
            assert_eq!(
                blocked(url),
                SsrfError::BlockedAddress(IpClass::Loopback),
                "{url}"
            );
        }
        assert_eq!(
            blocked("http://2852039166/"), // 169.254.169.254
            SsrfError::BlockedAddress(IpClass::LinkLocal)
        );
        assert_eq!(
            blocked("http://0xa9fea9fe/"),
            SsrfError::BlockedAddress(IpClass::LinkLocal)
        );
        assert_eq!(
            blocked("http://0xA.1/"),
            SsrfError::BlockedAddress(IpClass::Private)
        );
        // Out of range or junk numbers are malformed, not silently a name.
        for url in [
            "http://4294967296/",
            "http://256.0.0.1/",
            "http://1.2.3.4.5/",
            "http://1.2.3.09/",
        ] {
            let e = check_url(url, STRICT);
            assert!(matches!(e, Err(SsrfError::Malformed(_))), "{url}: {e:?}");
        }
        assert_eq!(
            parse_ipv4_whatwg("1.2.3.4"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(parse_ipv4_whatwg("0x"), Some(Ipv4Addr::new(0, 0, 0, 0)));
        assert_eq!(parse_ipv4_whatwg("1.256"), Some(Ipv4Addr::new(1, 0, 1, 0)));
        assert_eq!(
            parse_ipv4_whatwg("1.2.256"),
            Some(Ipv4Addr::new(1, 2, 1, 0))
        );
        assert_eq!(parse_ipv4_whatwg("1.2.3.256"), None);
    }

    #[test]
    fn test_ipv6_literals_refused() {
        for (url, class) in [
            ("http://[::1]/", IpClass::Loopback),
            ("http://[0:0:0:0:0:0:0:1]:80/", IpClass::Loopback),
            ("http://[::]/", IpClass::Unspecified),
            ("http://[fc00::1]/", IpClass::Private),
            ("http://[fd12:3456::1]/", IpClass::Private),
            ("http://[fe80::1]/", IpClass::LinkLocal),
            ("http://[FE80::ABCD]/", IpClass::LinkLocal),
            ("http://[ff02::1]/", IpClass::Multicast),
            ("http://[::ffff:127.0.0.1]/", IpClass::Loopback),
            ("http://[::ffff:7f00:1]/", IpClass::Loopback),
            ("http://[::ffff:169.254.169.254]/", IpClass::LinkLocal),
            ("http://[::ffff:10.0.0.1]/", IpClass::Private),
            ("http://[::127.0.0.1]/", IpClass::Loopback),
            ("http://[64:ff9b::a9fe:a9fe]/", IpClass::LinkLocal),
            ("http://[2002:7f00:1::]/", IpClass::Loopback),
            ("http://[2001:db8::1]/", IpClass::Reserved),
            ("http://[fd00:ec2::254]/", IpClass::Private),
        ] {
            assert_eq!(blocked(url), SsrfError::BlockedAddress(class), "{url}");
        }
        assert!(check_url("http://[::ffff:8.8.8.8]/", STRICT).is_ok());
        assert!(matches!(
            blocked("http://[fe80::1%25eth0]/"),
            SsrfError::Malformed(_)
        ));
        assert!(matches!(blocked("http://::1/"), SsrfError::Malformed(_)));
        assert!(matches!(blocked("http://[::1/"), SsrfError::Malformed(_)));
        assert!(matches!(blocked("http://[::1]x/"), SsrfError::Malformed(_)));
    }

    #[test]
    fn test_userinfo_tricks_refused() {
        for url in [
            "http://a@b/",
            "http://api.openai.com@127.0.0.1/",
            "http://user:pass@api.openai.com/",
            "http://127.0.0.1:80@api.openai.com/",
            "https://@api.openai.com/",
        ] {
            assert_eq!(blocked(url), SsrfError::UserInfo, "{url}");
        }
        // `@` after the authority is path, not userinfo.
        let p = check_url("https://api.openai.com/@127.0.0.1", STRICT).unwrap();
        assert_eq!(p.host, Host::Domain("api.openai.com".into()));
        // Backslash and whitespace tricks.
        for url in [
            "http://api.openai.com\\@127.0.0.1/",
            "http://127.0.0.1\\.api.openai.com/",
            "http://api.openai.com /",
            "http://api.openai.com\t@127.0.0.1/",
            "http://api.openai\n.com/",
        ] {
            assert!(matches!(blocked(url), SsrfError::Malformed(_)), "{url}");
        }
    }

    #[test]
    fn test_names_for_this_machine_and_metadata_refused() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://foo.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.GOOGLE.INTERNAL./",
            "http://metadata/",
            "http://instance-data/",
            "http://printer.local/",
            "http://x.internal/",
            "http://router.home.arpa/",
            "http://127.0.0.1.nip.io/",
            "http://10.0.0.1.sslip.io/",
        ] {
            assert!(
                matches!(blocked(url), SsrfError::BlockedName(_)),
                "{url}: {:?}",
                check_url(url, STRICT)
            );
        }
    }

    #[test]
    fn test_malformed_and_other_schemes_refused() {
        assert_eq!(blocked("file:///etc/passwd"), SsrfError::Scheme);
        assert_eq!(blocked("gopher://x/"), SsrfError::Scheme);
        assert_eq!(blocked("ftp://example.com/"), SsrfError::Scheme);
        for url in [
            "api.openai.com/v1",
            "http:///x",
            "http://",
            "http://a..b/",
            "http://exa%6dple.com/",
            "http://exämple.com/",
            "http://a:/",
            "http://a:0/",
            "http://a:65536/",
            "http://a:8o/",
            "http://.a/",
        ] {
            assert!(matches!(blocked(url), SsrfError::Malformed(_)), "{url}");
        }
    }

    #[test]
    fn test_local_mode_permits_exactly_loopback_host() {
        assert!(check_url("http://127.0.0.1:9999/v1", LOCAL).is_ok());
        assert!(check_url("http://localhost:9999/v1", LOCAL).is_ok());
        assert!(check_url("http://[::1]:9999/v1", LOCAL).is_ok());
        // Not the rest of loopback, and nothing else private.
        assert!(check_url("http://127.0.0.2/", LOCAL).is_err());
        assert!(check_url("http://foo.localhost/", LOCAL).is_err());
        assert!(check_url("http://10.0.0.1/", LOCAL).is_err());
        assert!(check_url("http://169.254.169.254/", LOCAL).is_err());
        assert!(check_url("http://metadata.google.internal/", LOCAL).is_err());
        // Without the flag, loopback is refused.
        assert!(check_url("http://127.0.0.1:9999/v1", STRICT).is_err());
    }
}
