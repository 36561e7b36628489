//! AWS Signature Version 4, checked the way an Amazon OpenSearch Service
//! domain with IAM access checks it, so the contract server refuses what
//! AWS would refuse. Written from AWS's description of the algorithm (IAM
//! User Guide, "Create a signed AWS API request": canonical request, string
//! to sign, signing key), independently of the `aws-sigv4` crate the
//! exporter signs with: a wrong canonical request on the exporter's side
//! does not verify here. The unit tests check it against vectors of AWS's
//! SigV4 test suite.
//!
//! The messages are AWS's own for each refusal.

use std::time::{Duration, SystemTime};

use ring::{digest, hmac};

/// The credentials and scope a domain accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Key {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub service: String,
}

/// A request as it arrived: the path and query exactly as on the wire,
/// header names in lower case.
#[derive(Debug, Clone, Copy)]
pub struct WireRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl WireRequest<'_> {
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const ALLOWED_SKEW: Duration = Duration::from_secs(5 * 60);

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Checks the request's signature; on refusal, the JSON body AWS answers
/// with HTTP 403.
pub fn verify(key: &SigV4Key, request: &WireRequest<'_>, now: SystemTime) -> Result<(), String> {
    let message = |text: &str| serde_json::json!({ "message": text }).to_string();
    let Some(authorization) = request.header("authorization") else {
        let verb = http_verb(request.method);
        return Err(serde_json::json!({
            "Message": format!("User: anonymous is not authorized to perform: es:{verb} because no resource-based policy allows the es:{verb} action")
        })
        .to_string());
    };
    let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(message("Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."));
    };
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let (Some(credential), Some(signed_headers), Some(signature)) = (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    ) else {
        return Err(message("Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter."));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(message("Credential should be scoped to a valid region. "));
    };
    if *access_key != key.access_key_id {
        return Err(message(
            "The security token included in the request is invalid.",
        ));
    }
    if *region != key.region {
        return Err(message("Credential should be scoped to a valid region. "));
    }
    if *service != key.service {
        return Err(message(&format!(
            "Credential should be scoped to correct service: '{}'. ",
            key.service
        )));
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    if !signed.contains(&"host") {
        return Err(message(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let Some(amz_date) = request.header("x-amz-date") else {
        return Err(message(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let Some(signed_at) = parse_amz_date(&amz_date) else {
        return Err(message(&format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
        )));
    };
    let skew = now
        .duration_since(signed_at)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > ALLOWED_SKEW {
        return Err(message(&format!(
            "Signature expired: {amz_date} is now earlier or later than the server's time by more than 5 min."
        )));
    }
    if !amz_date.starts_with(date) {
        return Err(message(SIGNATURE_MISMATCH));
    }
    let body_hash = hex(digest::digest(&digest::SHA256, request.body).as_ref());
    if let Some(claimed) = request.header("x-amz-content-sha256") {
        if claimed != body_hash {
            return Err(message(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    let canonical = canonical_request(request, &signed, &body_hash);
    let expected = signature_of(
        &key.secret_access_key,
        &amz_date,
        date,
        region,
        service,
        &canonical,
    );
    if expected != signature {
        return Err(message(SIGNATURE_MISMATCH));
    }
    Ok(())
}

/// The IAM action of Amazon OpenSearch Service for an HTTP method.
fn http_verb(method: &str) -> &'static str {
    match method {
        "PUT" => "ESHttpPut",
        "POST" => "ESHttpPost",
        "DELETE" => "ESHttpDelete",
        "HEAD" => "ESHttpHead",
        "PATCH" => "ESHttpPatch",
        _ => "ESHttpGet",
    }
}

/// The canonical request (for every service but S3: the path is encoded
/// once more as it stands on the wire).
pub fn canonical_request(request: &WireRequest<'_>, signed: &[&str], body_hash: &str) -> String {
    let path = if request.path.is_empty() {
        "/".to_string()
    } else {
        uri_encode(request.path, false)
    };
    let mut params: Vec<(String, String)> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed {
        let value = request
            .header(name)
            .unwrap_or_default()
            .split(',')
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(",");
        headers.push_str(&format!("{name}:{value}\n"));
    }
    format!(
        "{}\n{path}\n{}\n{headers}\n{}\n{body_hash}",
        request.method,
        query.join("&"),
        signed.join(";")
    )
}

/// The signature of a canonical request: string to sign, signing key
/// (HMAC chain over date, region, service, `aws4_request`), HMAC, hex.
pub fn signature_of(
    secret: &str,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mac = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    };
    let mut key = mac(format!("AWS4{secret}").as_bytes(), date);
    for part in [region, service, "aws4_request"] {
        key = mac(&key, part);
    }
    hex(&mac(&key, &string_to_sign))
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, `/`
/// kept in paths, everything else `%XX` in upper case.
fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| (bytes.get(j).copied()).and_then(|b| (b as char).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYYMMDDTHHMMSSZ` to a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors of AWS's SigV4 test suite (the awslabs/aws-c-auth signing
    // test suite, as shipped in the aws-sigv4 crate's
    // `aws-signing-test-suite/v4`): credentials AKIDEXAMPLE /
    // wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service
    // "service", 2015-08-30T12:36:00Z.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const AMZ_DATE: &str = "20150830T123600Z";

    fn key() -> SigV4Key {
        SigV4Key {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            region: "us-east-1".into(),
            service: "service".into(),
        }
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn signed_at() -> SystemTime {
        parse_amz_date(AMZ_DATE).unwrap()
    }

    #[test]
    fn the_amz_date_is_read() {
        assert_eq!(
            signed_at(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
        );
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }

    /// get-vanilla-query-order-encoded: query parameters sorted and encoded.
    #[test]
    fn a_query_signed_by_the_test_suite_verifies() {
        let h = headers(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", AMZ_DATE),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"),
        ]);
        let request = WireRequest {
            method: "GET",
            path: "/",
            query: "Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
            headers: &h,
            body: b"",
        };
        let body_hash = hex(digest::digest(&digest::SHA256, b"").as_ref());
        assert_eq!(
            canonical_request(&request, &["host", "x-amz-date"], &body_hash),
            "GET\n/\n%E1%88%B4=Value1&Param=Value2&Param-3=Value3\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(verify(&key(), &request, signed_at()), Ok(()));
        // The same signature on another query does not verify.
        let tampered = WireRequest {
            query: "Param-3=Value3&Param=Value9&%E1%88%B4=Value1",
            ..request
        };
        let refused = verify(&key(), &tampered, signed_at()).unwrap_err();
        assert!(
            refused.contains("signature we calculated does not match"),
            "{refused}"
        );
    }

    /// post-x-www-form-urlencoded: a body, its hash signed as a header.
    #[test]
    fn a_body_signed_by_the_test_suite_verifies() {
        let h = headers(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("Content-Length", "13"),
            ("X-Amz-Date", AMZ_DATE),
            ("x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"),
        ]);
        let request = WireRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"Param1=value1",
        };
        assert_eq!(verify(&key(), &request, signed_at()), Ok(()));
        let other_body = WireRequest {
            body: b"Param1=value2",
            ..request
        };
        let refused = verify(&key(), &other_body, signed_at()).unwrap_err();
        assert!(refused.contains("x-amz-content-sha256"), "{refused}");
    }

    /// get-header-value-trim: header values trimmed, inner spaces collapsed.
    #[test]
    fn header_values_are_trimmed_as_the_test_suite_says() {
        let h = headers(&[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", " value1"),
            ("My-Header2", " \"a   b   c\""),
            ("X-Amz-Date", AMZ_DATE),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
        ]);
        let request = WireRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        assert_eq!(verify(&key(), &request, signed_at()), Ok(()));
    }

    /// double-encode-path: the path is encoded again as it stands.
    #[test]
    fn the_path_is_encoded_twice() {
        let request = WireRequest {
            method: "POST",
            path: "/test/@connections/JBDvjfGEIAMCERw%3D",
            query: "",
            headers: &[],
            body: b"",
        };
        let canonical = canonical_request(&request, &[], "x");
        assert_eq!(
            canonical.lines().nth(1),
            Some("/test/%40connections/JBDvjfGEIAMCERw%253D")
        );
    }

    #[test]
    fn refusals_carry_aws_messages() {
        let unsigned = WireRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &[],
            body: b"",
        };
        let refused = verify(&key(), &unsigned, signed_at()).unwrap_err();
        assert!(
            refused.contains("User: anonymous is not authorized to perform: es:ESHttpGet"),
            "{refused}"
        );
        let h = headers(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", AMZ_DATE),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
        ]);
        let wrong_region = WireRequest {
            headers: &h,
            ..unsigned
        };
        let refused = verify(&key(), &wrong_region, signed_at()).unwrap_err();
        assert!(
            refused.contains("Credential should be scoped to a valid region"),
            "{refused}"
        );
        let late = signed_at() + Duration::from_secs(600);
        let h = headers(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", AMZ_DATE),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
        ]);
        let expired = WireRequest {
            headers: &h,
            ..unsigned
        };
        assert!(verify(&key(), &expired, late)
            .unwrap_err()
            .contains("Signature expired"));
    }
}
