//! Fuzz the load report parser: nothing panics, and whatever parses re-emits to the very same
//! bytes (a report has one encoding).
#![no_main]

use cluster_core::load_report::LoadReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LoadReport::parse(data) {
        assert_eq!(r.to_bytes(), data, "load reports are canonical");
        assert!(r.entries.windows(2).all(|w| w[0].id < w[1].id));
    }
});
