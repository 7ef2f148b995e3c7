use super::*;

#[test]
fn output_buffer_keeps_head_and_tail() {
    let mut b = OutputBuffer::new(10);
    b.push(b"0123456789abcdefghij");
    let (text, omitted) = b.finish(&[]);
    assert_eq!(omitted, 10);
    assert!(text.starts_with("01234\n"), "{text}");
    assert!(text.ends_with("\nfghij"), "{text}");
    assert!(text.contains("10 bytes of output omitted"), "{text}");

    let mut small = OutputBuffer::new(100);
    small.push(b"hello ");
    small.push(b"world");
    assert_eq!(small.finish(&[]), ("hello world".to_string(), 0));

    let mut many = OutputBuffer::new(6);
    for c in b"abcdefghij" {
        many.push(&[*c]);
    }
    let (text, omitted) = many.finish(&[]);
    assert_eq!(omitted, 4);
    assert!(
        text.starts_with("abc\n") && text.ends_with("\nhij"),
        "{text}"
    );
}

#[test]
fn scrubs_secrets_longest_first() {
    let out = scrub("token=abc123 and abc", &["abc".into(), "abc123".into()]);
    assert_eq!(out, format!("token={REDACTED} and {REDACTED}"));
}

#[test]
fn env_names() {
    assert_eq!(param_env_name("db-name"), "YOUOPS_PARAM_DB_NAME");
    assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
}
