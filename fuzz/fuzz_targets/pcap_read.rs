//! Fuzz the one capture reader (`host::core::pcap`) that `clusterd demo --pcap`, the simulator
//! and `hwctl esp` use: pcap and pcapng, every link type.
#![no_main]

use host::core::pcap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = pcap::read_frames(data) {
        for f in &frames {
            let _ = pcap::ip_packet(f.link, &f.data);
        }
    }
    if let Ok((link, packets)) = pcap::read(data) {
        // What was read writes back, as pcap and as pcapng, and reads again to the same bytes.
        for file in [pcap::write(link, &packets), pcap::write_ng(link, &packets)] {
            let (again_link, again) = pcap::read(&file).expect("own output reads");
            assert_eq!(again_link, link);
            assert_eq!(again.len(), packets.len());
            assert!(again.iter().zip(&packets).all(|(a, b)| a.data == b.data));
        }
    }
});
