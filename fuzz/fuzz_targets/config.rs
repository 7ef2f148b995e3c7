#![no_main]
//! youops.toml: never panics; a rejected file always names at least one problem.
use libfuzzer_sys::fuzz_target;
use youops_core::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::parse(&text, std::path::Path::new("/fuzz"), "fuzz.toml", &|_| None) {
        assert!(!e.issues.is_empty());
    }
});
