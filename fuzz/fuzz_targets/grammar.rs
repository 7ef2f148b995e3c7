#![no_main]
//! The command grammar: never panics; whatever parses renders back to itself.
use libfuzzer_sys::fuzz_target;
use youops_core::grammar;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cmd) = grammar::parse(&text) {
        let again = grammar::parse(&cmd.render()).expect("a rendered command parses");
        assert_eq!(again, cmd);
    }
});
