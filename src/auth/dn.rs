//! Distinguished names in the OpenSSL one-line form FTS3 uses everywhere
//! (`/DC=ch/DC=cern/OU=Users/CN=Name`): what mod_ssl's `LegacyDNStringFormat` exports and what
//! the reference stores as `user_dn`. Bytes outside printable ASCII are written `\xHH`, as
//! `X509_NAME_oneline` does, so a DN is always one line of ASCII.

use std::fmt::Write;

use x509_parser::x509::X509Name;

/// Short names OpenSSL prints; anything else is written as its dotted OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// ASN.1 BMPString tag: UTF-16BE on the wire, converted to UTF-8 before escaping.
const TAG_BMP_STRING: u32 = 30;

/// Format a name as `/K=V/K=V`, RDNs in encoding order.
pub fn oneline(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for rdn in name.iter() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            out.push('/');
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            let value = atv.attr_value();
            let bytes: Vec<u8> = if value.tag().0 == TAG_BMP_STRING {
                let units: Vec<u16> = value
                    .data
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                    .collect();
                String::from_utf16_lossy(&units).into_bytes()
            } else {
                value.data.to_vec()
            };
            for b in bytes {
                if (0x20..0x7f).contains(&b) {
                    out.push(b as char);
                } else {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\x{b:02X}");
                }
            }
        }
    }
    out
}
