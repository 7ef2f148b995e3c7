use super::*;
use proptest::prelude::*;

const FRAGMENTS: [&str; 16] = [
    "[server]\n",
    "listen = \"127.0.0.1:1\"\n",
    "[[ops]]\n",
    "name = \"a.b\"\n",
    "runner = { type = \"builtin\", name = \"x\" }\n",
    "[[ops.params]]\n",
    "type = \"enum\"\n",
    "values = [\"x\"]\n",
    "[principals.p]\n",
    "roles = [\"r\"]\n",
    "tokens = [\"${T}\"]\n",
    "[[grants]]\n",
    "ops = [\"*\"]\n",
    "default = 3\n",
    "pattern = \"(\"\n",
    "timeout = \"1x\"\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary text never panics, and an error always says something.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        if let Err(e) = Config::parse(&text, Path::new("/x"), "p", &|_| None) {
            prop_assert!(!e.issues.is_empty());
        }
    }

    /// Structured-looking documents (fragments of real config in any order) never panic.
    #[test]
    fn fragment_soup_never_panics(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..24)) {
        let text: String = parts.iter().map(|i| FRAGMENTS[*i]).collect();
        if let Err(e) = Config::parse(&text, Path::new("/x"), "p", &|_| None) {
            prop_assert!(!e.issues.is_empty());
            for i in &e.issues {
                prop_assert!(i.line.is_none_or(|l| l >= 1 && l <= text.lines().count() + 1));
            }
        }
    }

    /// Invalid UTF-8 and NUL bytes get a clear error, not a panic.
    #[test]
    fn bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::parse(&text, Path::new("/x"), "p", &|_| None);
    }
}
