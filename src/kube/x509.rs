//! The few facts ha-vip needs from a client certificate: its X.509 version,
//! its expiry, its subject and its public key.
//!
//! rustls' own parser (webpki) refuses X.509 v1 certificates, which
//! `openssl x509 -req` without `-extfile` still makes and which kubectl and
//! the API server accept; a client never has to validate its own
//! certificate, only to send it. Reading four fields of the TBSCertificate is
//! a short DER walk, so it is done here rather than with a general X.509
//! crate (and its parser-combinator and proc-macro dependencies).

use std::time::{Duration, SystemTime};

/// What the client certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// X.509 version as written on the certificate: 1, 2 or 3.
    pub version: u8,
    /// End of validity (notAfter).
    pub not_after: SystemTime,
    /// Subject common name (the Kubernetes user), if any.
    pub common_name: Option<String>,
    /// Subject organizations (the Kubernetes groups).
    pub organizations: Vec<String>,
    /// DER of the SubjectPublicKeyInfo, to match against the private key.
    pub(crate) spki: Vec<u8>,
}

/// One DER element: its tag and its content.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads DER elements one after the other.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<Tlv<'a>, String> {
        let data = self.0;
        let (&tag, rest) = data.split_first().ok_or("truncated DER")?;
        let (&first, rest) = rest.split_first().ok_or("truncated DER length")?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("unsupported DER length".into());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err("truncated DER element".into());
        }
        let header = data.len() - rest.len();
        self.0 = &rest[len..];
        Ok(Tlv {
            tag,
            content: &rest[..len],
            whole: &data[..header + len],
        })
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let t = self.next()?;
        if t.tag == tag {
            Ok(t)
        } else {
            Err(format!("expected {what}"))
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// Parses a DER certificate far enough to answer [`CertInfo`]; the error is
/// a short description without any of the certificate's content.
pub(crate) fn parse(der: &[u8]) -> Result<CertInfo, String> {
    let cert = Reader(der).expect(SEQUENCE, "a certificate (SEQUENCE)")?;
    let mut tbs = Reader(
        Reader(cert.content)
            .expect(SEQUENCE, "a TBSCertificate")?
            .content,
    );
    let mut first = tbs.next()?;
    let version = if first.tag == VERSION_TAG {
        let v = Reader(first.content).expect(INTEGER, "a version number")?;
        first = tbs.next()?;
        match v.content {
            [n @ 0..=2] => n + 1,
            _ => return Err("unknown X.509 version".into()),
        }
    } else {
        1
    };
    if first.tag != INTEGER {
        return Err("expected a serial number".into());
    }
    tbs.expect(SEQUENCE, "a signature algorithm")?;
    tbs.expect(SEQUENCE, "an issuer")?;
    let mut validity = Reader(tbs.expect(SEQUENCE, "a validity")?.content);
    let _not_before = validity.next()?;
    let not_after = time(&validity.next()?)?;
    let subject = tbs.expect(SEQUENCE, "a subject")?;
    let spki = tbs.expect(SEQUENCE, "a subject public key")?;
    let (common_name, organizations) = names(subject.content)?;
    Ok(CertInfo {
        version,
        not_after,
        common_name,
        organizations,
        spki: spki.whole.to_vec(),
    })
}

/// CN and every O of a Name.
fn names(name: &[u8]) -> Result<(Option<String>, Vec<String>), String> {
    let mut cn = None;
    let mut orgs = Vec::new();
    let mut rdns = Reader(name);
    while !rdns.0.is_empty() {
        let mut set = Reader(rdns.expect(SET, "a relative distinguished name")?.content);
        while !set.0.is_empty() {
            let mut atv = Reader(set.expect(SEQUENCE, "an attribute")?.content);
            let oid = atv.expect(OID, "an attribute type")?;
            let value = String::from_utf8_lossy(atv.next()?.content).into_owned();
            match oid.content {
                OID_CN => cn = Some(value),
                OID_O => orgs.push(value),
                _ => {}
            }
        }
    }
    Ok((cn, orgs))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(t: &Tlv<'_>) -> Result<SystemTime, String> {
    let s = std::str::from_utf8(t.content).map_err(|_| "invalid time")?;
    let digits = s.strip_suffix('Z').ok_or("time not in UTC")?;
    let (year, rest) = match t.tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i64 = num(&digits[..2])?;
            // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (num(&digits[..4])?, &digits[4..]),
        _ => return Err("invalid validity time".into()),
    };
    let field = |i: usize| num::<i64>(&rest[i..i + 2]);
    let (month, day, h, m, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    let secs = u64::try_from(secs).map_err(|_| "validity before 1970")?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| "invalid time digits".to_string())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn rcgen_certificate_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ha-vip-node");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = parse(cert.der()).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.common_name.as_deref(), Some("ha-vip-node"));
        assert_eq!(info.organizations, ["system:nodes"]);
        let expect = SystemTime::UNIX_EPOCH
            + Duration::from_secs(days_from_civil(2031, 5, 17) as u64 * 86_400);
        assert_eq!(info.not_after, expect);
        assert_eq!(
            info.spki,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        assert!(parse(&cert.der()[..40]).is_err());
    }
}
