//! `shared::signature`: the `Authorization` header parser and `verify`, on any header, body
//! and secrets. Never panics; a header that `authorization_header` made for one of the
//! secrets always verifies; whatever verifies names a secret that really signed the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::signature::{SignatureError, authorization_header, parse_header, verify};

fuzz_target!(|input: (Option<&str>, &[u8], Vec<&str>, u8)| {
    let (header, body, secrets, pick) = input;

    // The parser accepts exactly `Signature <40 lowercase hex>`, and round-trips.
    if let Some(h) = header {
        match parse_header(h) {
            Ok(bytes) => assert_eq!(format!("Signature {}", hex::encode(bytes)), h),
            Err(e) => assert_eq!(e, SignatureError::Malformed),
        }
    }

    match verify(header, body, &secrets) {
        Ok(slot) => {
            // The first secret that signed this body, never another.
            let header = header.expect("verified without a header");
            assert_eq!(authorization_header(body, secrets[slot]), header);
            for earlier in &secrets[..slot] {
                assert_ne!(authorization_header(body, earlier), header);
            }
        }
        Err(SignatureError::Missing) => assert!(header.is_none()),
        Err(SignatureError::Malformed) => assert!(parse_header(header.unwrap()).is_err()),
        Err(SignatureError::Mismatch) => {
            for s in &secrets {
                assert_ne!(Some(authorization_header(body, s).as_str()), header);
            }
        }
    }

    // What we sign, we accept: under the signing secret or an earlier identical signer.
    if !secrets.is_empty() {
        let i = usize::from(pick) % secrets.len();
        let made = authorization_header(body, secrets[i]);
        let slot = verify(Some(&made), body, &secrets).expect("own signature refused");
        assert!(slot <= i);
        assert_eq!(authorization_header(body, secrets[slot]), made);
    }
});
