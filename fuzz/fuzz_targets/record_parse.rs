//! Fuzz the replication record and datagram parsers: nothing panics, and whatever parses
//! re-emits to bytes that parse to the same value (records: to the very same bytes).
#![no_main]

use cluster_core::record::{Datagram, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::parse(data) {
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data, "records are canonical");
        assert_eq!(Record::parse(&out).as_ref(), Ok(&r));
        assert_eq!(&r.to_bytes()[..], data);
    }
    if let Ok(d) = Datagram::parse(data) {
        let mut out = Vec::new();
        d.emit(&mut out);
        // a heartbeat's reserved byte is ignored on parse and emitted as 0
        assert_eq!(Datagram::parse(&out), Ok(d));
    }
});
