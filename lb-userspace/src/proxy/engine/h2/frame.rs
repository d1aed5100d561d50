//! HTTP/2 frames (RFC 9113 section 4 and 6) as the server reads and writes them: the 9-byte
//! header, the frame types and flags, SETTINGS, error codes, and writers that append a whole
//! frame to a connection's output. Nothing here does I/O or keeps state.

use bytes::BufMut;

/// The 9 bytes before every payload.
pub const HEADER_LEN: usize = 9;
/// What a client must send first (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest payload either side may send until told otherwise (SETTINGS_MAX_FRAME_SIZE).
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
/// Every window starts at this (RFC 9113 6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest window or increment.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    /// On SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

pub mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    CompressionError = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Header {
    /// The header at the front of `bytes`, if all 9 bytes are there.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let head: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            length: usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]),
            kind: head[3],
            flags: head[4],
            // The reserved bit is ignored on receipt.
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        })
    }
}

/// Appends a frame header; the payload (`length` bytes) must follow.
pub fn write_header(out: &mut impl BufMut, length: usize, kind: u8, flags: u8, stream: u32) {
    let len = (length as u32).to_be_bytes();
    out.put_slice(&[len[1], len[2], len[3], kind, flags]);
    out.put_slice(&stream.to_be_bytes());
}

/// Appends a whole frame.
pub fn write_frame(out: &mut impl BufMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    write_header(out, payload.len(), kind, flags, stream);
    out.put_slice(payload);
}

pub fn write_settings(out: &mut impl BufMut, settings: &[(u16, u32)]) {
    write_header(out, settings.len() * 6, kind::SETTINGS, 0, 0);
    for (id, value) in settings {
        out.put_slice(&id.to_be_bytes());
        out.put_slice(&value.to_be_bytes());
    }
}

pub fn write_window_update(out: &mut impl BufMut, stream: u32, increment: u32) {
    write_frame(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &increment.to_be_bytes(),
    );
}

pub fn write_rst_stream(out: &mut impl BufMut, stream: u32, reason: Reason) {
    write_frame(
        out,
        kind::RST_STREAM,
        0,
        stream,
        &(reason as u32).to_be_bytes(),
    );
}

pub fn write_goaway(out: &mut impl BufMut, last_stream: u32, reason: Reason) {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&last_stream.to_be_bytes());
    payload[4..].copy_from_slice(&(reason as u32).to_be_bytes());
    write_frame(out, kind::GOAWAY, 0, 0, &payload);
}

/// A header block as HEADERS and as many CONTINUATION frames as `max_frame` needs.
pub fn write_header_block(
    out: &mut impl BufMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut pieces = block.chunks(max_frame.max(1)).peekable();
    let mut kind = kind::HEADERS;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if block.is_empty() {
        write_frame(out, kind, flags | flag::END_HEADERS, stream, &[]);
        return;
    }
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            flags |= flag::END_HEADERS;
        }
        write_frame(out, kind, flags, stream, piece);
        kind = kind::CONTINUATION;
        flags = 0;
    }
}

/// The payload without its padding (PADDED flag: a length byte first, that many bytes last).
pub fn unpad(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & flag::PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|end| &rest[..end])
}

/// The identifiers and values of a SETTINGS payload (its length a multiple of 6).
pub fn settings(payload: &[u8]) -> Option<impl Iterator<Item = (u16, u32)> + '_> {
    payload.len().is_multiple_of(6).then(|| {
        payload.chunks_exact(6).map(|entry| {
            (
                u16::from_be_bytes([entry[0], entry[1]]),
                u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
            )
        })
    })
}

/// A 4-byte big-endian number with its reserved top bit cleared.
pub fn u31(bytes: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) & 0x7fff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_reads_back() {
        let mut out = Vec::new();
        write_frame(&mut out, kind::DATA, flag::END_STREAM, 7, b"hello");
        let header = Header::parse(&out).expect("9 bytes");
        assert_eq!(
            header,
            Header {
                length: 5,
                kind: kind::DATA,
                flags: flag::END_STREAM,
                stream: 7
            }
        );
        assert_eq!(&out[HEADER_LEN..], b"hello");
        assert_eq!(Header::parse(&out[..8]), None);
    }

    #[test]
    fn a_large_header_block_goes_on_in_continuation_frames() {
        let block = vec![0x82u8; 40];
        let mut out = Vec::new();
        write_header_block(&mut out, 1, &block, true, 16);
        let mut rest = &out[..];
        let mut seen = Vec::new();
        while let Some(header) = Header::parse(rest) {
            seen.push((header.kind, header.flags, header.length));
            rest = &rest[HEADER_LEN + header.length..];
        }
        assert_eq!(
            seen,
            vec![
                (kind::HEADERS, flag::END_STREAM, 16),
                (kind::CONTINUATION, 0, 16),
                (kind::CONTINUATION, flag::END_HEADERS, 8)
            ]
        );
    }

    #[test]
    fn padding_is_taken_off_and_too_much_of_it_is_refused() {
        assert_eq!(
            unpad(flag::PADDED, &[2, b'a', b'b', 0, 0]),
            Some(&b"ab"[..])
        );
        assert_eq!(unpad(0, b"ab"), Some(&b"ab"[..]));
        assert_eq!(unpad(flag::PADDED, &[3, b'a', 0]), None);
        assert_eq!(unpad(flag::PADDED, &[]), None);
    }

    #[test]
    fn settings_of_a_wrong_length_are_refused() {
        let entries: Vec<_> = settings(&[0, 4, 0, 1, 0, 0]).expect("6 bytes").collect();
        assert_eq!(entries, vec![(setting::INITIAL_WINDOW_SIZE, 65_536)]);
        assert!(settings(&[0, 4, 0]).is_none());
    }
}
