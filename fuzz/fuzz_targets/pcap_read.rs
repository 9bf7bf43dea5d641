//! Fuzz the pcap/pcapng reader that `clusterd demo --pcap` and the simulator use.
#![no_main]

use host::core::pcap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((link, packets)) = pcap::read(data) {
        // What was read writes back and reads again to the same packets.
        let again = pcap::read(&pcap::write(link, &packets)).expect("own output reads");
        assert_eq!(again.1.len(), packets.len());
    }
});
