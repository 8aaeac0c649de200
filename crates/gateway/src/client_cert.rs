//! The client certificate a TLS listener verified, as backends learn of it: Envoy's
//! `X-Forwarded-Client-Cert` (XFCC) header, built once per client connection.
//!
//! The value is one XFCC element: `Hash=<sha256 of the leaf's DER, lower-case hex>`, then
//! `Subject="<subject DN>"` (RFC 4514 string, most specific RDN first, as nginx's
//! `$ssl_client_s_dn` and Envoy write it) and one `URI=` / `DNS=` pair per URI / DNS subject
//! alternative name, in the certificate's order. `Subject` is always double-quoted, a SAN
//! when it has `,`, `;`, `=`, `"`, `\` or a space; inside quotes `"` and `\` are escaped by a
//! backslash.
//!
//! ```
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
//! ```
use http::header::HeaderName;
use std::fmt::Write as _;
use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// `X-Forwarded-Client-Cert`: removed from every client request; set from the verified
/// client certificate where a listener forwards it.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The XFCC element for the leaf certificate `der` (already verified by rustls). A
/// certificate x509-parser cannot read still gets its `Hash`.
pub fn xfcc(der: &[u8]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("Hash=");
    push_hex(
        &mut out,
        ring::digest::digest(&ring::digest::SHA256, der).as_ref(),
    );
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return out;
    };
    out.push_str(";Subject=");
    push_quoted(&mut out, &subject_dn(cert.subject()));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let (key, value) = match name {
                GeneralName::URI(v) => ("URI", *v),
                GeneralName::DNSName(v) => ("DNS", *v),
                _ => continue,
            };
            // A header value holds printable ASCII only; a name with anything else is left
            // out rather than mangled into a different name.
            if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                continue;
            }
            out.push(';');
            out.push_str(key);
            out.push('=');
            if value
                .bytes()
                .any(|b| matches!(b, b',' | b';' | b'=' | b'"' | b'\\' | b' '))
            {
                push_quoted(&mut out, value);
            } else {
                out.push_str(value);
            }
        }
    }
    out
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
    fn garbage_still_gets_a_hash() {
        let v = xfcc(b"not a certificate");
        assert!(v.starts_with("Hash=") && !v.contains(';'), "{v}");
        assert_eq!(v.len(), 5 + 64);
    }
}
