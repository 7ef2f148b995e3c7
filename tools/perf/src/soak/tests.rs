//! The soak driver's unit tests: signing, encoding, statistics.

use super::stats::slope_per_min;
use super::wire::{form_encode, hmac_sha256, ulids};
use youops_testkit::github::percent_decode;

#[test]
fn hmac_matches_rfc_4231_case_2() {
    let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
    assert_eq!(
        hex::encode(mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn hmac_hashes_long_keys_first() {
    // RFC 4231 case 6: a 131-byte key.
    let key = [0xaa_u8; 131];
    let mac = hmac_sha256(
        &key,
        &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
    );
    assert_eq!(
        hex::encode(mac),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn form_encoding_and_ulids() {
    assert_eq!(form_encode("soak.echo msg=a1"), "soak.echo+msg%3Da1");
    assert_eq!(
        ulids(
            "request `01J9Z4K3M2ABCDEFGHJKMNPQRS` — state: `succeeded` 01J9Z4K3M2ABCDEFGHJKMNPQRSX"
        ),
        vec!["01J9Z4K3M2ABCDEFGHJKMNPQRS".to_string()]
    );
    assert_eq!(percent_decode("youops%3Asucceeded"), "youops:succeeded");
}

#[test]
fn slope_of_a_line() {
    let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64)).collect();
    assert!((slope_per_min(&pts).unwrap() - 120.0).abs() < 1e-9);
}
