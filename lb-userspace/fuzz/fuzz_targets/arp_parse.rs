//! Arbitrary bytes into the Ethernet + ARP parser; whatever parses must emit and parse back to
//! the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::vrrp::arp::{self, Frame, FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(repr) = arp::parse(data) {
        let mut buffer = [0u8; FRAME_LEN];
        repr.emit(&mut Frame::new_unchecked(&mut buffer[..]));
        assert_eq!(arp::parse(&buffer), Ok(repr));
        assert_eq!(buffer[..], data[..FRAME_LEN]);
    }
});
