//! Arbitrary bytes into the Ethernet + ARP frame parser (`wire::arp::parse_frame`); whatever
//! parses must emit and parse back to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::wire::arp::{parse_frame, FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = parse_frame(data) {
        let mut buffer = [0u8; FRAME_LEN];
        frame.emit(&mut buffer);
        assert_eq!(parse_frame(&buffer), Ok(frame));
        assert_eq!(buffer[..], data[..FRAME_LEN]);
    }
});
