//! Fuzz the text parsers operators feed: the rule file and clusterd's config file.
#![no_main]

use host::core::rules::RuleSet;
use host::daemon::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = RuleSet::parse(&text) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = Config::parse(&text, std::path::Path::new(".")) {
        assert!(!e.to_string().is_empty());
    }
});
