//! The client certificate a TLS listener verified, as backends and the access log learn of
//! it: Envoy's `X-Forwarded-Client-Cert` (XFCC) header, built once per client connection.
//!
//! The gateway's element is `Hash=<sha256 of the leaf's DER, lower-case hex>`, then by
//! default `Subject="<subject DN>"` (RFC 4514 string, most specific RDN first, as nginx's
//! `$ssl_client_s_dn` and Envoy write it) and one `URI=` / `DNS=` pair per URI / DNS subject
//! alternative name, in the certificate's order. [`XfccFormat`] chooses the parts
//! (`forward_client_cert_details`): `By=` (the gateway's own URI SANs) comes first,
//! `Cert="..."` / `Chain="..."` (URL-encoded PEM, as Envoy) after `Hash`. `Subject`, `Cert`
//! and `Chain` are always double-quoted, a SAN when it has `,`, `;`, `=`, `"`, `\` or a
//! space; inside quotes `"` and `\` are escaped by a backslash.
//!
//! ```
//! use scalewise_gateway::client_cert::{ClientCert, XfccFormat};
//! use scalewise_gateway::config::XfccDetail;
//!
//! let key = rcgen::KeyPair::generate().unwrap();
//! let mut params = rcgen::CertificateParams::new(vec!["client.internal".to_owned()]).unwrap();
//! params.distinguished_name = rcgen::DistinguishedName::new();
//! params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example, Inc.");
//! params.distinguished_name.push(rcgen::DnType::CommonName, "billing");
//! let cert = params.self_signed(&key).unwrap();
//!
//! let xfcc = scalewise_gateway::client_cert::xfcc(cert.der());
//! assert!(xfcc.starts_with("Hash="));
//! assert!(xfcc.ends_with(r#";Subject="CN=billing,O=Example\\, Inc.";DNS=client.internal"#), "{xfcc}");
//!
//! // Only the hash and the certificate itself, and who verified it.
//! let format = XfccFormat::new(&[XfccDetail::Cert, XfccDetail::By], vec!["spiffe://example.org/gw".into()]);
//! let parsed = ClientCert::parse(cert.der());
//! let xfcc = format.element(&parsed, &[cert.der().clone()]);
//! assert!(xfcc.starts_with("By=spiffe://example.org/gw;Hash="), "{xfcc}");
//! assert!(xfcc.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0A"), "{xfcc}");
//! assert!(!xfcc.contains("Subject="));
//! assert_eq!(parsed.subject.as_deref(), Some(r"CN=billing,O=Example\, Inc."));
//! ```
use crate::config::XfccDetail;
use base64::Engine as _;
use http::header::HeaderName;
use rustls::pki_types::CertificateDer;
use std::fmt::Write as _;
use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// `X-Forwarded-Client-Cert`: removed from client requests (kept from trusted proxies where
/// a listener says so); set from the verified client certificate where a listener forwards
/// it.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// What the gateway knows of a verified client certificate, parsed once per connection: for
/// the XFCC element and the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub hash: String,
    /// The subject DN as an RFC 4514 string (see [`subject_dn`]); `None` when x509-parser
    /// cannot read the certificate (rustls verified it, so this is rare).
    pub subject: Option<String>,
    /// URI and DNS subject alternative names in the certificate's order (`"URI"` / `"DNS"`,
    /// value), printable ASCII only: a name with anything else is left out rather than
    /// mangled into a different name.
    sans: Vec<(&'static str, String)>,
}

impl ClientCert {
    /// Parses the leaf certificate `der` (already verified by rustls). A certificate
    /// x509-parser cannot read still gets its hash.
    pub fn parse(der: &[u8]) -> Self {
        let mut hash = String::with_capacity(64);
        push_hex(
            &mut hash,
            ring::digest::digest(&ring::digest::SHA256, der).as_ref(),
        );
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Self {
                hash,
                subject: None,
                sans: Vec::new(),
            };
        };
        Self {
            hash,
            subject: Some(subject_dn(cert.subject())),
            sans: sans(&cert),
        }
    }
}

fn sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let (key, value) = match name {
                GeneralName::URI(v) => ("URI", *v),
                GeneralName::DNSName(v) => ("DNS", *v),
                _ => continue,
            };
            if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                continue;
            }
            out.push((key, value.to_owned()));
        }
    }
    out
}

/// The URI subject alternative names of certificate `der` (the gateway's own, for `By=`),
/// printable ones only; none if it cannot be parsed.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => sans(&cert)
            .into_iter()
            .filter(|(k, _)| *k == "URI")
            .map(|(_, v)| v)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Which parts the gateway's XFCC element has (`forward_client_cert_details`), and the
/// values of `By`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfccFormat {
    by: Vec<String>,
    cert: bool,
    chain: bool,
    subject: bool,
    uri: bool,
    dns: bool,
}

impl Default for XfccFormat {
    /// `Hash`, `Subject`, `URI`, `DNS`.
    fn default() -> Self {
        Self::new(
            &[XfccDetail::Subject, XfccDetail::Uri, XfccDetail::Dns],
            Vec::new(),
        )
    }
}

impl XfccFormat {
    /// The parts `details` (in any order; `Hash` is always there). `by` are the gateway's
    /// own URI SANs, written only if `details` has [`XfccDetail::By`].
    pub fn new(details: &[XfccDetail], by: Vec<String>) -> Self {
        let has = |d| details.contains(&d);
        Self {
            by: if has(XfccDetail::By) { by } else { Vec::new() },
            cert: has(XfccDetail::Cert),
            chain: has(XfccDetail::Chain),
            subject: has(XfccDetail::Subject),
            uri: has(XfccDetail::Uri),
            dns: has(XfccDetail::Dns),
        }
    }

    /// The element for `cert`, parsed from the first certificate of `chain` (what the client
    /// sent, leaf first).
    pub fn element(&self, cert: &ClientCert, chain: &[CertificateDer<'_>]) -> String {
        let mut out = String::with_capacity(256);
        for by in &self.by {
            out.push_str("By=");
            push_san_value(&mut out, by);
            out.push(';');
        }
        out.push_str("Hash=");
        out.push_str(&cert.hash);
        if self.cert {
            if let Some(leaf) = chain.first() {
                out.push_str(";Cert=\"");
                push_url_encoded_pem(&mut out, leaf);
                out.push('"');
            }
        }
        if self.chain && !chain.is_empty() {
            out.push_str(";Chain=\"");
            for c in chain {
                push_url_encoded_pem(&mut out, c);
            }
            out.push('"');
        }
        if self.subject {
            if let Some(subject) = &cert.subject {
                out.push_str(";Subject=");
                push_quoted(&mut out, subject);
            }
        }
        for (key, value) in &cert.sans {
            let wanted = if *key == "URI" { self.uri } else { self.dns };
            if !wanted {
                continue;
            }
            out.push(';');
            out.push_str(key);
            out.push('=');
            push_san_value(&mut out, value);
        }
        out
    }
}

/// The default XFCC element (`Hash`, `Subject`, `URI`, `DNS`) for the leaf certificate
/// `der` (already verified by rustls). A certificate x509-parser cannot read still gets its
/// `Hash`.
pub fn xfcc(der: &[u8]) -> String {
    XfccFormat::default().element(&ClientCert::parse(der), &[])
}

fn push_san_value(out: &mut String, value: &str) {
    if value
        .bytes()
        .any(|b| matches!(b, b',' | b';' | b'=' | b'"' | b'\\' | b' '))
    {
        push_quoted(out, value);
    } else {
        out.push_str(value);
    }
}

/// `der` as PEM (64-column base64 lines, `\n` line ends), percent-encoded as Envoy's `Cert`
/// and `Chain`: everything but RFC 3986's unreserved characters becomes `%XX`, so `+`, `/`
/// and `=` of the base64 survive any URL decoder (a query decoder would read `+` as space).
fn push_url_encoded_pem(out: &mut String, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    push_url_encoded(out, "-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII: the chunk is valid UTF-8.
        push_url_encoded(out, std::str::from_utf8(line).unwrap_or_default());
        push_url_encoded(out, "\n");
    }
    push_url_encoded(out, "-----END CERTIFICATE-----\n");
}

fn push_url_encoded(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `name` as an RFC 4514 string: RDNs from the last to the first (`CN=client,O=Example`),
/// multi-valued RDNs joined by `+`. Values that are not strings are `#` and the hex of their
/// DER; special characters are escaped with `\`, and control and non-ASCII bytes as `\XX`,
/// so the result is plain ASCII that fits in a header.
pub fn subject_dn(name: &X509Name<'_>) -> String {
    let mut out = String::with_capacity(name.as_raw().len() + 16);
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            push_attribute(&mut out, attr);
        }
    }
    out
}

fn push_attribute(out: &mut String, attr: &AttributeTypeAndValue<'_>) {
    let oid = attr.attr_type().to_id_string();
    // RFC 4514's names, plus OpenSSL's for the two others that are common in client
    // certificates; any other type as its dotted OID.
    let short = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.5" => "serialNumber",
        "1.2.840.113549.1.9.1" => "emailAddress",
        other => other,
    };
    out.push_str(short);
    out.push('=');
    let value = attr.attr_value();
    let text = match value.tag() {
        Tag::NumericString | Tag::PrintableString | Tag::Utf8String | Tag::Ia5String => {
            attr.as_str().ok().map(str::to_owned)
        }
        Tag::BmpString => utf16be(value.data),
        // Teletex strings are Latin-1 in practice (OpenSSL reads them so).
        Tag::TeletexString => Some(value.data.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    };
    match text {
        Some(text) => push_dn_value(out, &text),
        None => {
            out.push('#');
            push_hex(out, &value.to_der_vec().unwrap_or_default());
        }
    }
}

fn utf16be(data: &[u8]) -> Option<String> {
    if data.len() % 2 != 0 {
        return None;
    }
    let units = data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

/// An attribute value with RFC 4514's escapes.
fn push_dn_value(out: &mut String, text: &str) {
    let last = text.len().saturating_sub(1);
    for (i, c) in text.char_indices() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
        }
    }
}

/// `"value"` with `"` and `\` escaped.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn hash_is_the_sha256_of_the_der_and_the_subject_is_rfc4514() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "A \"quoted\"; name+x");
        params.distinguished_name.push(DnType::CommonName, " Zoë ");
        let der = cert(params);
        let v = xfcc(&der);
        let hash = ring::digest::digest(&ring::digest::SHA256, &der);
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            v,
            format!(
                r#"Hash={hex};Subject="CN=\\ Zo\\C3\\AB\\ ,O=A \\\"quoted\\\"\\; name\\+x,C=US""#
            )
        );
    }

    #[test]
    fn uri_and_dns_names_follow_the_subject_quoted_when_needed() {
        let mut params = CertificateParams::new(vec!["client.internal".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/ns/billing".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(SanType::URI("urn:x;a=b".try_into().unwrap()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "c");
        let v = xfcc(&cert(params));
        assert!(
            v.ends_with(
                r#";Subject="CN=c";DNS=client.internal;URI=spiffe://example.org/ns/billing;URI="urn:x;a=b""#
            ),
            "{v}"
        );
    }

    #[test]
    fn details_choose_the_parts_and_envoys_order_is_kept() {
        let mut params = CertificateParams::new(vec!["c.internal".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI("spiffe://e/c".try_into().unwrap()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "c");
        let leaf = cert(params);
        let other = cert(CertificateParams::new(vec!["ca".to_owned()]).unwrap());
        let chain = [
            CertificateDer::from(leaf.clone()),
            CertificateDer::from(other),
        ];
        let parsed = ClientCert::parse(&leaf);
        let hash = &parsed.hash;
        let by = vec!["spiffe://e/gw".to_owned(), "urn:a b".to_owned()];

        // Only what was asked for; `By` only with `by` in the list.
        let f = XfccFormat::new(&[XfccDetail::Dns], by.clone());
        assert_eq!(
            f.element(&parsed, &chain),
            format!("Hash={hash};DNS=c.internal")
        );
        let f = XfccFormat::new(&[XfccDetail::Uri, XfccDetail::By], by.clone());
        assert_eq!(
            f.element(&parsed, &chain),
            format!("By=spiffe://e/gw;By=\"urn:a b\";Hash={hash};URI=spiffe://e/c")
        );

        // Cert is the leaf, Chain every certificate, each as URL-encoded PEM.
        let f = XfccFormat::new(&[XfccDetail::Chain, XfccDetail::Cert], Vec::new());
        let v = f.element(&parsed, &chain);
        let mut leaf_pem = String::new();
        push_url_encoded_pem(&mut leaf_pem, &chain[0]);
        let mut other_pem = String::new();
        push_url_encoded_pem(&mut other_pem, &chain[1]);
        assert_eq!(
            v,
            format!("Hash={hash};Cert=\"{leaf_pem}\";Chain=\"{leaf_pem}{other_pem}\"")
        );
        assert!(leaf_pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
        assert!(leaf_pem.ends_with("%0A-----END%20CERTIFICATE-----%0A"));
        assert!(!leaf_pem.contains(['+', '/', '=', ' ', '\n']), "{leaf_pem}");
    }

    #[test]
    fn url_encoding_keeps_only_unreserved_characters() {
        let mut out = String::new();
        push_url_encoded(&mut out, "aZ09-._~ +/=\n\"%");
        assert_eq!(out, "aZ09-._~%20%2B%2F%3D%0A%22%25");
    }

    #[test]
    fn garbage_still_gets_a_hash() {
        let v = xfcc(b"not a certificate");
        assert!(v.starts_with("Hash=") && !v.contains(';'), "{v}");
        assert_eq!(v.len(), 5 + 64);
    }
}
