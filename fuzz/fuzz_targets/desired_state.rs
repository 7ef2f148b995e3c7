#![no_main]
//! GitOps desired-state files: never panics; errors carry a line within the file.
use libfuzzer_sys::fuzz_target;
use youops_frontend_git::Kinds;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static KINDS: Kinds = {
            let t: toml::Table = toml::from_str("name = \"user\"\nkey = \"name\"\napply = \"user.apply\"\ndelete = \"user.delete\"").expect("static kind");
            Kinds::parse(&[t], std::path::Path::new("/fuzz")).expect("static kinds")
        };
    }
    let text = String::from_utf8_lossy(data);
    KINDS.with(|k| {
        if let Err(errors) = youops_frontend_git::desired::parse_file("users.toml", &text, k) {
            for e in errors {
                assert!(e.line <= text.lines().count() + 1, "line {} out of range", e.line);
            }
        }
    });
});
