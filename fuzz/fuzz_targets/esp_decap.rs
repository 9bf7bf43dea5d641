//! Fuzz ESP decapsulation on the software path: arbitrary bytes as an inbound ESP packet for an
//! installed SA (both key sizes, ESN on and off). Nothing may panic; garbage never authenticates.
#![no_main]

use driver::esp::{Direction, EspEngine, EspRequest, SaConfig, SaKey, SoftwareEsp, Spi};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut esp = SoftwareEsp::new(4);
    for (i, klen) in [16usize, 32].into_iter().enumerate() {
        let Ok(key) = SaKey::new(&vec![0x42; klen], [1, 2, 3, 4]) else { return };
        let mut sa = SaConfig::gcm(Spi(0x100 + i as u32), Direction::Inbound, key);
        sa.esn = i == 1;
        if esp.install_sa(&sa).is_err() {
            return;
        }
    }
    let r = esp.process(EspRequest::Decapsulate { packet: data });
    assert!(r.is_err(), "random bytes authenticated under a fixed key");
});
