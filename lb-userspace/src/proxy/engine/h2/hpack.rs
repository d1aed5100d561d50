//! HPACK (RFC 7541) for the HTTP/2 server: a decoder with the dynamic table and Huffman, and an
//! encoder that never indexes (static-table names, literal values), so the peer's table size never
//! matters to us.
//!
//! Decoding borrows wherever it can: indexed fields are handed out as slices of the static or
//! dynamic table, raw literals as slices of the header block, and only Huffman-coded strings go
//! through a scratch buffer owned by the [`Decoder`] (reused, so steady state does not allocate
//! per field). Huffman decoding uses the canonical structure of the RFC's code: per code length a
//! first code and an offset into the symbols sorted by (length, symbol), found by comparing a
//! 32-bit window of the input against per-length limits.

use std::collections::VecDeque;
use std::fmt;

/// Why a header block could not be decoded (every one is a COMPRESSION_ERROR for the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The block ends in the middle of a representation, integer or string.
    Truncated,
    /// An integer does not fit in 32 bits (or uses more continuation octets than that needs).
    IntegerOverflow,
    /// Index 0, or an index beyond the static plus dynamic table.
    BadIndex,
    /// Invalid Huffman data: a code cut short, padding longer than 7 bits or not all ones, or EOS.
    BadHuffman,
    /// A dynamic table size update above our advertised maximum, or not at the start of the block.
    TableSizeUpdate,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            DecodeError::Truncated => "header block truncated",
            DecodeError::IntegerOverflow => "integer overflow in header block",
            DecodeError::BadIndex => "invalid header table index",
            DecodeError::BadHuffman => "invalid Huffman-coded string",
            DecodeError::TableSizeUpdate => "invalid dynamic table size update",
        };
        write!(f, "HPACK: {reason}")
    }
}

impl std::error::Error for DecodeError {}

/// The outcome of a failed [`Decoder::decode`]: either the block was bad, or the field callback
/// refused a field (its error is passed through untouched).
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeOrField<E> {
    Decode(DecodeError),
    Field(E),
}

impl<E> From<DecodeError> for DecodeOrField<E> {
    fn from(error: DecodeError) -> Self {
        DecodeOrField::Decode(error)
    }
}

/// RFC 7541 Appendix A. Index `i` in HPACK's index space is `STATIC_TABLE[i - 1]`.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Per-entry overhead the RFC adds to name and value lengths (4.1).
const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix B: (code, length in bits) for symbols 0..=255 and EOS (256).
#[rustfmt::skip]
static HUFFMAN_CODES: [(u32, u8); 257] = [
    /*   0 */ (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    /*   4 */ (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    /*   8 */ (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    /*  12 */ (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    /*  16 */ (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    /*  20 */ (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    /*  24 */ (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    /*  28 */ (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    /*  32 */ (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    /*  36 */ (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    /*  40 */ (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    /*  44 */ (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    /*  48 */ (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    /*  52 */ (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    /*  56 */ (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    /*  60 */ (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    /*  64 */ (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    /*  68 */ (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    /*  72 */ (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    /*  76 */ (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    /*  80 */ (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    /*  84 */ (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    /*  88 */ (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    /*  92 */ (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    /*  96 */ (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    /* 100 */ (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    /* 104 */ (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    /* 108 */ (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    /* 112 */ (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    /* 116 */ (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    /* 120 */ (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    /* 124 */ (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    /* 128 */ (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    /* 132 */ (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    /* 136 */ (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    /* 140 */ (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    /* 144 */ (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    /* 148 */ (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    /* 152 */ (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    /* 156 */ (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    /* 160 */ (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    /* 164 */ (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    /* 168 */ (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    /* 172 */ (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    /* 176 */ (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    /* 180 */ (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    /* 184 */ (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    /* 188 */ (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    /* 192 */ (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    /* 196 */ (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    /* 200 */ (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    /* 204 */ (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    /* 208 */ (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    /* 212 */ (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    /* 216 */ (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    /* 220 */ (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    /* 224 */ (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    /* 228 */ (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    /* 232 */ (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    /* 236 */ (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    /* 240 */ (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    /* 244 */ (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    /* 248 */ (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    /* 252 */ (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    /* 256 */ (0x3fffffff, 30),
];

const EOS_SYMBOL: u16 = 256;
const MAX_CODE_LENGTH: usize = 30;

/// All codes of one length, as the canonical-Huffman decoder needs them.
#[derive(Clone, Copy)]
struct CodeLengthClass {
    /// One past the last code of this length, left-aligned in a 32-bit window: a window below
    /// this (and not below the previous class's limit) starts with a code of this length.
    window_limit: u64,
    /// `32 - length`: shifts a 32-bit window down to the code.
    shift: u32,
    first_code: u32,
    /// Where this length's symbols start in `symbols_by_length`.
    first_symbol: u16,
}

/// Decoding tables derived from `HUFFMAN_CODES` at compile time.
struct HuffmanDecodeTables {
    /// Only the lengths that occur, shortest first.
    classes: [CodeLengthClass; MAX_CODE_LENGTH],
    class_count: usize,
    /// Symbols sorted by (code length, symbol): the order canonical codes are assigned in.
    symbols_by_length: [u16; 257],
}

const fn build_huffman_decode_tables() -> HuffmanDecodeTables {
    let mut count_per_length = [0u32; MAX_CODE_LENGTH + 1];
    let mut symbol = 0;
    while symbol < 257 {
        count_per_length[HUFFMAN_CODES[symbol].1 as usize] += 1;
        symbol += 1;
    }

    let mut symbols_by_length = [0u16; 257];
    let mut classes = [CodeLengthClass {
        window_limit: 0,
        shift: 0,
        first_code: 0,
        first_symbol: 0,
    }; MAX_CODE_LENGTH];
    let mut class_count = 0;
    let mut next_code: u32 = 0;
    let mut sorted = 0;
    let mut length = 1;
    while length <= MAX_CODE_LENGTH {
        let count = count_per_length[length];
        if count > 0 {
            classes[class_count] = CodeLengthClass {
                window_limit: ((next_code + count) as u64) << (32 - length),
                shift: 32 - length as u32,
                first_code: next_code,
                first_symbol: sorted as u16,
            };
            class_count += 1;
            let mut symbol = 0;
            while symbol < 257 {
                if HUFFMAN_CODES[symbol].1 as usize == length {
                    symbols_by_length[sorted] = symbol as u16;
                    sorted += 1;
                }
                symbol += 1;
            }
        }
        next_code = (next_code + count) << 1;
        length += 1;
    }
    HuffmanDecodeTables {
        classes,
        class_count,
        symbols_by_length,
    }
}

static HUFFMAN_DECODE: HuffmanDecodeTables = build_huffman_decode_tables();

/// Appends the Huffman decoding of `encoded` to `out`.
fn huffman_decode(encoded: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let tables = &HUFFMAN_DECODE;
    let classes = &tables.classes[..tables.class_count];
    // The shortest code is 5 bits, so the output is at most 8/5 of the input.
    out.reserve(encoded.len().saturating_mul(8) / 5 + 1);

    // The low `bit_count` bits of `bits` are unread input, oldest first; higher bits are stale.
    let mut bits: u64 = 0;
    let mut bit_count: u32 = 0;
    let mut input = encoded.iter();
    loop {
        while bit_count <= 56 {
            match input.next() {
                Some(&byte) => {
                    bits = (bits << 8) | u64::from(byte);
                    bit_count += 8;
                }
                None => break,
            }
        }
        if bit_count == 0 {
            return Ok(());
        }
        // Next 32 input bits, zero-filled past the end of input.
        let window = if bit_count >= 32 {
            (bits >> (bit_count - 32)) & 0xffff_ffff
        } else {
            (bits << (32 - bit_count)) & 0xffff_ffff
        };
        let Some(class) = classes.iter().find(|class| window < class.window_limit) else {
            return Err(DecodeError::BadHuffman);
        };
        let code_length = 32 - class.shift;
        if code_length > bit_count {
            // Only padding may be left: at most 7 bits, all ones (a prefix of EOS). No code of
            // 7 bits or fewer is all ones, so valid padding always lands here.
            let padding_mask = (1u64 << bit_count) - 1;
            return if bit_count <= 7 && bits & padding_mask == padding_mask {
                Ok(())
            } else {
                Err(DecodeError::BadHuffman)
            };
        }
        let code = (window >> class.shift) as u32;
        let position =
            usize::from(class.first_symbol) + code.wrapping_sub(class.first_code) as usize;
        match tables.symbols_by_length.get(position) {
            Some(&symbol) if symbol != EOS_SYMBOL => out.push(symbol as u8),
            _ => return Err(DecodeError::BadHuffman),
        }
        bit_count -= code_length;
    }
}

/// Length in octets of the Huffman coding of `bytes`.
#[cfg(test)]
fn huffman_encoded_len(bytes: &[u8], lowercase: bool) -> usize {
    let bits: usize = bytes
        .iter()
        .map(|&byte| {
            let byte = if lowercase {
                byte.to_ascii_lowercase()
            } else {
                byte
            };
            usize::from(HUFFMAN_CODES[usize::from(byte)].1)
        })
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman coding of `bytes` (optionally ASCII-lowercased), padded with ones.
#[cfg(test)]
fn huffman_encode(bytes: &[u8], lowercase: bool, out: &mut Vec<u8>) {
    // Fewer than 8 pending bits plus one code of at most 30 bits always fits.
    let mut bits: u64 = 0;
    let mut bit_count: u32 = 0;
    for &byte in bytes {
        let byte = if lowercase {
            byte.to_ascii_lowercase()
        } else {
            byte
        };
        let (code, length) = HUFFMAN_CODES[usize::from(byte)];
        bits = (bits << length) | u64::from(code);
        bit_count += u32::from(length);
        while bit_count >= 8 {
            bit_count -= 8;
            out.push((bits >> bit_count) as u8);
        }
    }
    if bit_count > 0 {
        let padding = 8 - bit_count;
        out.push(((bits << padding) | ((1 << padding) - 1)) as u8);
    }
}

/// Reads an integer with an `prefix_bits`-bit prefix (5.1) starting at `block[*position]`,
/// advancing `position` past it.
fn decode_integer(
    block: &[u8],
    position: &mut usize,
    prefix_bits: u32,
) -> Result<usize, DecodeError> {
    let prefix_max = (1u32 << prefix_bits) - 1;
    let first = *block.get(*position).ok_or(DecodeError::Truncated)?;
    *position += 1;
    let prefix = u32::from(first) & prefix_max;
    if prefix < prefix_max {
        return Ok(prefix as usize);
    }
    let mut value = u64::from(prefix_max);
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*position).ok_or(DecodeError::Truncated)?;
        *position += 1;
        value += u64::from(byte & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(DecodeError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow);
        }
        shift += 7;
        // Five continuation octets carry 35 bits; more can only be redundant zeros or overflow.
        if shift > 28 {
            return Err(DecodeError::IntegerOverflow);
        }
    }
}

/// Appends `value` with an `prefix_bits`-bit prefix; `flags` fills the bits above the prefix.
fn encode_integer(value: usize, prefix_bits: u32, flags: u8, out: &mut Vec<u8>) {
    let prefix_max = (1usize << prefix_bits) - 1;
    if value < prefix_max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | prefix_max as u8);
    let mut rest = value - prefix_max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// One dynamic table entry, name and value in a single allocation.
struct DynamicEntry {
    name_and_value: Box<[u8]>,
    name_len: usize,
}

impl DynamicEntry {
    fn new(name: &[u8], value: &[u8]) -> DynamicEntry {
        let mut name_and_value = Vec::with_capacity(name.len() + value.len());
        name_and_value.extend_from_slice(name);
        name_and_value.extend_from_slice(value);
        DynamicEntry {
            name_and_value: name_and_value.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    fn name(&self) -> &[u8] {
        self.name_and_value.get(..self.name_len).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.name_and_value.get(self.name_len..).unwrap_or_default()
    }

    fn size(&self) -> usize {
        self.name_and_value.len() + ENTRY_OVERHEAD
    }
}

/// The decoder's dynamic table (2.3.2): newest entry first.
struct DynamicTable {
    entries: VecDeque<DynamicEntry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_until_fits(0);
    }

    fn evict_until_fits(&mut self, incoming: usize) {
        while self.size + incoming > self.max_size {
            match self.entries.pop_back() {
                Some(evicted) => self.size -= evicted.size(),
                None => break,
            }
        }
    }

    /// Adds `entry` as the newest one, evicting as needed (4.4). An entry larger than the whole
    /// table empties it and is handed back instead of being stored.
    fn insert(&mut self, entry: DynamicEntry) -> Option<DynamicEntry> {
        let entry_size = entry.size();
        if entry_size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return Some(entry);
        }
        self.evict_until_fits(entry_size);
        self.size += entry_size;
        self.entries.push_front(entry);
        None
    }
}

/// Name and value of the field at HPACK index `index` (1..=61 static, then dynamic, newest first).
fn lookup(table: &DynamicTable, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    if index == 0 {
        return Err(DecodeError::BadIndex);
    }
    if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
        return Ok((name, value));
    }
    let entry = table
        .entries
        .get(index - 1 - STATIC_TABLE.len())
        .ok_or(DecodeError::BadIndex)?;
    Ok((entry.name(), entry.value()))
}

/// Where a decoded string literal lives until the field is handed out: raw literals stay in the
/// block, Huffman-coded ones are decoded into the decoder's scratch buffer.
#[derive(Clone, Copy)]
enum StringSpan {
    Block { start: usize, end: usize },
    Scratch { start: usize, end: usize },
}

impl StringSpan {
    fn resolve<'a>(self, block: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        let (source, start, end) = match self {
            StringSpan::Block { start, end } => (block, start, end),
            StringSpan::Scratch { start, end } => (scratch, start, end),
        };
        source.get(start..end).unwrap_or_default()
    }
}

/// Reads a string literal (5.2) at `block[*position]`, Huffman-decoding into `scratch` if needed.
fn decode_string(
    block: &[u8],
    position: &mut usize,
    scratch: &mut Vec<u8>,
) -> Result<StringSpan, DecodeError> {
    let huffman = block.get(*position).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let length = decode_integer(block, position, 7)?;
    let start = *position;
    let end = start.checked_add(length).ok_or(DecodeError::Truncated)?;
    let encoded = block.get(start..end).ok_or(DecodeError::Truncated)?;
    *position = end;
    if !huffman {
        return Ok(StringSpan::Block { start, end });
    }
    let scratch_start = scratch.len();
    huffman_decode(encoded, scratch)?;
    Ok(StringSpan::Scratch {
        start: scratch_start,
        end: scratch.len(),
    })
}

/// Decodes header blocks from one peer; holds that connection's dynamic table.
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertise: the most a size update may ask for.
    max_table_size: usize,
    /// Huffman-decoded strings of the current field; reused across fields and blocks.
    scratch: Vec<u8>,
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we advertise (4096 by default).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                max_size: max_table_size,
            },
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads already joined), calling
    /// `field(name, value)` for each field in order. Returns the callback's error or a DecodeError.
    /// Dynamic table size updates are allowed only at the start of the block and must be <= max_table_size.
    pub fn decode<E>(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), DecodeOrField<E>> {
        let Decoder {
            table,
            max_table_size,
            scratch,
        } = self;
        let mut position = 0;
        let mut at_block_start = true;
        while let Some(&first) = block.get(position) {
            if first & 0x80 != 0 {
                // 6.1 Indexed Header Field.
                let index = decode_integer(block, &mut position, 7)?;
                let (name, value) = lookup(table, index)?;
                field(name, value).map_err(DecodeOrField::Field)?;
            } else if first & 0xe0 == 0x20 {
                // 6.3 Dynamic Table Size Update: only before the first field (4.2).
                let new_size = decode_integer(block, &mut position, 5)?;
                if !at_block_start || new_size > *max_table_size {
                    return Err(DecodeError::TableSizeUpdate.into());
                }
                table.set_max_size(new_size);
                continue;
            } else {
                // 6.2 Literal Header Field: with incremental indexing (01), without indexing
                // (0000) or never indexed (0001). The latter two differ only for re-encoders.
                let incremental = first & 0x40 != 0;
                let name_index =
                    decode_integer(block, &mut position, if incremental { 6 } else { 4 })?;
                scratch.clear();
                let name_span = if name_index == 0 {
                    Some(decode_string(block, &mut position, scratch)?)
                } else {
                    lookup(table, name_index)?;
                    None
                };
                let value_span = decode_string(block, &mut position, scratch)?;
                let value = value_span.resolve(block, scratch);
                let name = match name_span {
                    Some(span) => span.resolve(block, scratch),
                    None => lookup(table, name_index)?.0,
                };
                if incremental {
                    // Copy before inserting: the name may live in an entry the insert evicts.
                    let entry = DynamicEntry::new(name, value);
                    match table.insert(entry) {
                        Some(too_large) => field(too_large.name(), too_large.value()),
                        None => {
                            let (name, value) = lookup(table, STATIC_TABLE.len() + 1)?;
                            field(name, value)
                        }
                    }
                } else {
                    field(name, value)
                }
                .map_err(DecodeOrField::Field)?;
            }
            at_block_start = false;
        }
        Ok(())
    }
}

/// Index of `name` (lowercase, as HTTP/2 requires) in the static table, if present: a `match`,
/// which the compiler turns into a few comparisons, since this runs for every header sent.
fn static_name_index(name: &[u8]) -> Option<usize> {
    match name {
        b":authority" => Some(1),
        b":method" => Some(2),
        b":path" => Some(4),
        b":scheme" => Some(6),
        b":status" => Some(8),
        b"accept-charset" => Some(15),
        b"accept-encoding" => Some(16),
        b"accept-language" => Some(17),
        b"accept-ranges" => Some(18),
        b"accept" => Some(19),
        b"access-control-allow-origin" => Some(20),
        b"age" => Some(21),
        b"allow" => Some(22),
        b"authorization" => Some(23),
        b"cache-control" => Some(24),
        b"content-disposition" => Some(25),
        b"content-encoding" => Some(26),
        b"content-language" => Some(27),
        b"content-length" => Some(28),
        b"content-location" => Some(29),
        b"content-range" => Some(30),
        b"content-type" => Some(31),
        b"cookie" => Some(32),
        b"date" => Some(33),
        b"etag" => Some(34),
        b"expect" => Some(35),
        b"expires" => Some(36),
        b"from" => Some(37),
        b"host" => Some(38),
        b"if-match" => Some(39),
        b"if-modified-since" => Some(40),
        b"if-none-match" => Some(41),
        b"if-range" => Some(42),
        b"if-unmodified-since" => Some(43),
        b"last-modified" => Some(44),
        b"link" => Some(45),
        b"location" => Some(46),
        b"max-forwards" => Some(47),
        b"proxy-authenticate" => Some(48),
        b"proxy-authorization" => Some(49),
        b"range" => Some(50),
        b"referer" => Some(51),
        b"refresh" => Some(52),
        b"retry-after" => Some(53),
        b"server" => Some(54),
        b"set-cookie" => Some(55),
        b"strict-transport-security" => Some(56),
        b"transfer-encoding" => Some(57),
        b"user-agent" => Some(58),
        b"vary" => Some(59),
        b"via" => Some(60),
        b"www-authenticate" => Some(61),
        _ => None,
    }
}

/// Appends a string literal as it is. Huffman coding would save about a fifth of the bytes of a
/// response head at the cost of a table lookup per byte, for every header of every response;
/// a proxy's heads are small beside its bodies, so the bytes are cheaper than the CPU (HAProxy's
/// encoder does not Huffman-code either).
fn encode_string(bytes: &[u8], lowercase: bool, out: &mut Vec<u8>) {
    encode_integer(bytes.len(), 7, 0x00, out);
    if lowercase {
        out.extend(bytes.iter().map(u8::to_ascii_lowercase));
    } else {
        out.extend_from_slice(bytes);
    }
}

/// Appends `:status`: one octet when the static table has the code, else a literal without
/// indexing using the static name.
pub fn encode_status(status: u16, out: &mut Vec<u8>) {
    let static_index: u8 = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            // Literal without indexing, name = static index 8 (":status").
            out.push(0x08);
            let mut digits = [0u8; 5];
            let mut rest = status;
            let mut first_digit = digits.len();
            // At least three digits (HTTP status codes are three; pad anything smaller).
            while rest > 0 || digits.len() - first_digit < 3 {
                first_digit -= 1;
                digits[first_digit] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            encode_string(&digits[first_digit..], false, out);
            return;
        }
    };
    out.push(0x80 | static_index);
}

/// Appends one field as a literal without indexing (0000xxxx). The name goes as a static-table
/// index when the table has it, else as a literal (lowercased, as HTTP/2 requires); the value is
/// Huffman-coded when that is shorter.
pub fn encode_field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    match static_name_index(name) {
        Some(index) => encode_integer(index, 4, 0x00, out),
        None => {
            out.push(0x00);
            encode_string(name, true, out);
        }
    }
    encode_string(value, false, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, DecodeError> {
        let mut fields = Vec::new();
        decoder
            .decode(block, |name, value| {
                fields.push((name.to_vec(), value.to_vec()));
                Ok::<(), ()>(())
            })
            .map_err(|error| match error {
                DecodeOrField::Decode(error) => error,
                DecodeOrField::Field(()) => unreachable!("callback never fails"),
            })?;
        Ok(fields)
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect()
    }

    fn table_contents(decoder: &Decoder) -> Fields {
        decoder
            .table
            .entries
            .iter()
            .map(|entry| (entry.name().to_vec(), entry.value().to_vec()))
            .collect()
    }

    /// Decodes `block` and checks the fields, the dynamic table (newest first) and its size.
    fn check_step(
        decoder: &mut Decoder,
        block: &str,
        expected: &[(&str, &str)],
        table: &[(&str, &str)],
        table_size: usize,
    ) {
        assert_eq!(decode_all(decoder, &hex(block)).unwrap(), fields(expected));
        assert_eq!(table_contents(decoder), fields(table));
        assert_eq!(decoder.table.size, table_size);
    }

    fn huffman_round_trip(bytes: &[u8]) {
        let mut encoded = Vec::new();
        huffman_encode(bytes, false, &mut encoded);
        assert_eq!(encoded.len(), huffman_encoded_len(bytes, false));
        let mut decoded = Vec::new();
        huffman_decode(&encoded, &mut decoded).unwrap();
        assert_eq!(decoded, bytes);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            let len = (self.next() % (max_len as u64 + 1)) as usize;
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn huffman_code_table_is_canonical() {
        // The decoder derives codes from lengths alone; this proves the RFC table agrees.
        let mut symbols: Vec<usize> = (0..257).collect();
        symbols.sort_by_key(|&symbol| (HUFFMAN_CODES[symbol].1, symbol));
        let mut code = 0u32;
        let mut previous_length = HUFFMAN_CODES[symbols[0]].1;
        for (rank, &symbol) in symbols.iter().enumerate() {
            let (expected, length) = HUFFMAN_CODES[symbol];
            if rank > 0 {
                code = (code + 1) << (length - previous_length);
            }
            previous_length = length;
            assert_eq!(code, expected, "symbol {symbol}");
        }
        assert_eq!(HUFFMAN_CODES[256], (0x3fff_ffff, 30));
    }

    #[test]
    fn integer_examples_from_rfc_c1() {
        let mut out = Vec::new();
        encode_integer(10, 5, 0, &mut out);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_integer(1337, 5, 0, &mut out);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_integer(42, 8, 0, &mut out);
        assert_eq!(out, [0x2a]);
        let mut position = 0;
        assert_eq!(
            decode_integer(&[0x1f, 0x9a, 0x0a], &mut position, 5),
            Ok(1337)
        );
        assert_eq!(position, 3);
    }

    #[test]
    fn integer_overflow_is_rejected() {
        let mut position = 0;
        // 2^32 - 1 is the largest accepted value.
        let mut out = Vec::new();
        encode_integer(u32::MAX as usize, 5, 0, &mut out);
        assert_eq!(
            decode_integer(&out, &mut position, 5),
            Ok(u32::MAX as usize)
        );
        let too_big = [0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f];
        position = 0;
        assert_eq!(
            decode_integer(&too_big, &mut position, 5),
            Err(DecodeError::IntegerOverflow)
        );
        let endless = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        position = 0;
        assert_eq!(
            decode_integer(&endless, &mut position, 5),
            Err(DecodeError::IntegerOverflow)
        );
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut decoder, &too_big),
            Err(DecodeError::IntegerOverflow)
        );
    }

    #[test]
    fn rfc_c2_1_literal_with_indexing() {
        let mut decoder = Decoder::new(4096);
        check_step(
            &mut decoder,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            &[("custom-key", "custom-header")],
            &[("custom-key", "custom-header")],
            55,
        );
    }

    #[test]
    fn rfc_c2_2_literal_without_indexing() {
        let mut decoder = Decoder::new(4096);
        check_step(
            &mut decoder,
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            &[],
            0,
        );
    }

    #[test]
    fn rfc_c2_3_literal_never_indexed() {
        let mut decoder = Decoder::new(4096);
        check_step(
            &mut decoder,
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            &[("password", "secret")],
            &[],
            0,
        );
    }

    #[test]
    fn rfc_c2_4_indexed_field() {
        let mut decoder = Decoder::new(4096);
        check_step(&mut decoder, "82", &[(":method", "GET")], &[], 0);
    }

    fn request_sequence(blocks: [&str; 3]) {
        let mut decoder = Decoder::new(4096);
        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        check_step(
            &mut decoder,
            blocks[0],
            &first,
            &[(":authority", "www.example.com")],
            57,
        );
        let mut second = first.to_vec();
        second.push(("cache-control", "no-cache"));
        check_step(
            &mut decoder,
            blocks[1],
            &second,
            &[
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ],
            110,
        );
        check_step(
            &mut decoder,
            blocks[2],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ],
            &[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ],
            164,
        );
    }

    #[test]
    fn rfc_c3_requests_without_huffman() {
        request_sequence([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn rfc_c4_requests_with_huffman() {
        request_sequence([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    fn response_sequence(blocks: [&str; 3]) {
        let mut decoder = Decoder::new(256);
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let location = "https://www.example.com";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        check_step(
            &mut decoder,
            blocks[0],
            &[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", location),
            ],
            &[
                ("location", location),
                ("date", date1),
                ("cache-control", "private"),
                (":status", "302"),
            ],
            222,
        );
        check_step(
            &mut decoder,
            blocks[1],
            &[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", location),
            ],
            &[
                (":status", "307"),
                ("location", location),
                ("date", date1),
                ("cache-control", "private"),
            ],
            222,
        );
        check_step(
            &mut decoder,
            blocks[2],
            &[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", date2),
                ("location", location),
                ("content-encoding", "gzip"),
                ("set-cookie", cookie),
            ],
            &[
                ("set-cookie", cookie),
                ("content-encoding", "gzip"),
                ("date", date2),
            ],
            215,
        );
    }

    #[test]
    fn rfc_c5_responses_without_huffman_evict() {
        response_sequence([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a
             3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04
             677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49
             553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        ]);
    }

    #[test]
    fn rfc_c6_responses_with_huffman_evict() {
        response_sequence([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e
             919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7
             821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed
             4ee5 b106 3d50 07",
        ]);
    }

    #[test]
    fn huffman_round_trips_every_byte_value() {
        for byte in 0..=255u8 {
            huffman_round_trip(&[byte]);
            huffman_round_trip(&[byte, byte, b'a', byte]);
        }
        let all: Vec<u8> = (0..=255).collect();
        huffman_round_trip(&all);
    }

    #[test]
    fn huffman_round_trips_random_strings() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            huffman_round_trip(&rng.bytes(100));
        }
        huffman_round_trip(b"");
    }

    #[test]
    fn huffman_padding_longer_than_seven_bits_is_rejected() {
        // "a" is 00011 (5 bits); 0x1f then a whole octet of ones is 11 bits of padding.
        let mut out = Vec::new();
        assert_eq!(
            huffman_decode(&[0x1f, 0xff], &mut out),
            Err(DecodeError::BadHuffman)
        );
        assert_eq!(
            huffman_decode(&[0xff], &mut out),
            Err(DecodeError::BadHuffman)
        );
        // The same symbol with valid 3-bit padding decodes.
        out.clear();
        assert_eq!(huffman_decode(&[0x1f], &mut out), Ok(()));
        assert_eq!(out, b"a");
    }

    #[test]
    fn huffman_padding_not_all_ones_is_rejected() {
        let mut out = Vec::new();
        // "a" (00011) followed by padding 110 and 000.
        assert_eq!(
            huffman_decode(&[0x1e], &mut out),
            Err(DecodeError::BadHuffman)
        );
        assert_eq!(
            huffman_decode(&[0x18], &mut out),
            Err(DecodeError::BadHuffman)
        );
    }

    #[test]
    fn huffman_eos_in_string_is_rejected() {
        let mut out = Vec::new();
        // EOS (30 ones) followed by two padding ones: 32 ones.
        assert_eq!(
            huffman_decode(&[0xff; 4], &mut out),
            Err(DecodeError::BadHuffman)
        );
        // "a" then EOS then padding.
        let mut bits: u64 = 0b00011;
        bits = (bits << 30) | 0x3fff_ffff;
        bits = (bits << 5) | 0b11111;
        let encoded = bits.to_be_bytes()[3..].to_vec();
        assert_eq!(encoded.len(), 5);
        assert_eq!(
            huffman_decode(&encoded, &mut out),
            Err(DecodeError::BadHuffman)
        );
        // Through the decoder: literal without indexing, literal name "x", Huffman value = EOS.
        let mut decoder = Decoder::new(4096);
        let block = [0x00, 0x01, b'x', 0x84, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_all(&mut decoder, &block),
            Err(DecodeError::BadHuffman)
        );
    }

    #[test]
    fn truncated_blocks_are_rejected_at_every_cut_point() {
        let blocks = [
            hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
            hex("1008 7061 7373 776f 7264 0673 6563 7265 74"),
            hex("4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            hex("3fe1 1f"), // size update to 4096
        ];
        for block in &blocks[..3] {
            for cut in 1..block.len() {
                let mut decoder = Decoder::new(4096);
                assert_eq!(
                    decode_all(&mut decoder, &block[..cut]),
                    Err(DecodeError::Truncated),
                    "cut at {cut} of {block:02x?}"
                );
            }
            assert!(decode_all(&mut Decoder::new(4096), block).is_ok());
        }
        assert_eq!(
            decode_all(&mut Decoder::new(4096), &blocks[3][..2]),
            Err(DecodeError::Truncated)
        );
        assert!(decode_all(&mut Decoder::new(4096), &blocks[3]).is_ok());
        // Cuts after the three one-octet fields leave a valid block; every later cut is an error.
        let huffman = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        for cut in 4..huffman.len() {
            assert!(decode_all(&mut Decoder::new(4096), &huffman[..cut]).is_err());
        }
    }

    #[test]
    fn index_zero_is_rejected() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut decoder, &[0x80]),
            Err(DecodeError::BadIndex)
        );
    }

    #[test]
    fn index_beyond_tables_is_rejected() {
        let mut decoder = Decoder::new(4096);
        // 62 with an empty dynamic table.
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]),
            Err(DecodeError::BadIndex)
        );
        // Literal with indexed name 62.
        assert_eq!(
            decode_all(&mut decoder, &[0x7e, 0x00]),
            Err(DecodeError::BadIndex)
        );
        // 61 is fine, and once one entry exists 62 is too, but 63 is not.
        assert!(decode_all(&mut decoder, &[0xbd]).is_ok());
        decode_all(&mut decoder, &hex("4001 6101 62")).unwrap();
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]).unwrap(),
            fields(&[("a", "b")])
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xbf]),
            Err(DecodeError::BadIndex)
        );
    }

    #[test]
    fn table_size_update_above_max_is_rejected() {
        let mut decoder = Decoder::new(256);
        // 0x3f 0xe2 0x01 = 31 + 98 + 128 = 257.
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0xe2, 0x01]),
            Err(DecodeError::TableSizeUpdate)
        );
        assert!(decode_all(&mut decoder, &[0x3f, 0xe1, 0x01]).is_ok());
    }

    #[test]
    fn table_size_update_after_first_field_is_rejected() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut decoder, &[0x82, 0x20]),
            Err(DecodeError::TableSizeUpdate)
        );
        // Several updates at the start are allowed.
        assert_eq!(
            decode_all(&mut decoder, &[0x20, 0x3f, 0x11, 0x82]).unwrap(),
            fields(&[(":method", "GET")])
        );
    }

    #[test]
    fn table_size_update_evicts_and_zero_empties() {
        let mut decoder = Decoder::new(4096);
        decode_all(&mut decoder, &hex("4001 6101 62 4001 6301 64")).unwrap();
        assert_eq!(decoder.table.size, 68);
        // Shrink to 34: only the newest entry fits.
        decode_all(&mut decoder, &[0x3f, 0x03]).unwrap();
        assert_eq!(table_contents(&decoder), fields(&[("c", "d")]));
        decode_all(&mut decoder, &[0x20]).unwrap();
        assert_eq!(table_contents(&decoder), fields(&[]));
        assert_eq!(decoder.table.size, 0);
        // An entry larger than the table empties it but is still delivered.
        assert_eq!(
            decode_all(&mut decoder, &hex("4001 6101 62")).unwrap(),
            fields(&[("a", "b")])
        );
        assert_eq!(decoder.table.size, 0);
    }

    #[test]
    fn literal_name_from_evicted_entry_is_still_delivered() {
        // Table holds one 34-octet entry; inserting a new one with that entry's name evicts it.
        let mut decoder = Decoder::new(40);
        decode_all(&mut decoder, &hex("4001 6101 62")).unwrap();
        assert_eq!(
            decode_all(&mut decoder, &hex("7e01 7a")).unwrap(),
            fields(&[("a", "z")])
        );
        assert_eq!(table_contents(&decoder), fields(&[("a", "z")]));
    }

    #[test]
    fn field_callback_error_is_passed_through() {
        let mut decoder = Decoder::new(4096);
        let result = decoder.decode(&[0x82, 0x84], |name, _| {
            if name == b":path" {
                Err("no")
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err(DecodeOrField::Field("no")));
    }

    #[test]
    fn encoded_status_decodes_back() {
        for status in [
            100, 200, 204, 206, 302, 304, 400, 404, 500, 503, 999, 7, 65535,
        ] {
            let mut out = Vec::new();
            encode_status(status, &mut out);
            let expected = if status < 100 {
                format!("{status:03}")
            } else {
                status.to_string()
            };
            let decoded = decode_all(&mut Decoder::new(4096), &out).unwrap();
            assert_eq!(decoded, fields(&[(":status", &expected)]));
            if [200, 204, 206, 304, 400, 404, 500].contains(&status) {
                assert_eq!(out.len(), 1);
            }
        }
    }

    #[test]
    fn encoded_fields_decode_back() {
        let mut rng = XorShift(42);
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let samples: [(&[u8], &[u8]); 6] = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"x-request-id", b"0123456789abcdef"),
            (b"set-cookie", b""),
            (b"", b""),
            (b"server", b"tandem"),
            (b"accept-encoding", b"gzip, deflate, br"),
        ];
        for (name, value) in samples {
            encode_field(name, value, &mut out);
            expected.push((name.to_vec(), value.to_vec()));
        }
        for _ in 0..200 {
            let name: Vec<u8> = rng.bytes(20).iter().map(|byte| b'a' + byte % 26).collect();
            let value = rng.bytes(300);
            encode_field(&name, &value, &mut out);
            expected.push((name, value));
        }
        let mut decoder = Decoder::new(4096);
        assert_eq!(decode_all(&mut decoder, &out).unwrap(), expected);
        assert_eq!(decoder.table.size, 0, "encoder never indexes");
    }

    #[test]
    fn encoded_names_are_lowercased() {
        let mut out = Vec::new();
        encode_field(b"X-Forwarded-For", b"10.0.0.1", &mut out);
        encode_field(b"Content-Length", b"5", &mut out);
        let decoded = decode_all(&mut Decoder::new(4096), &out).unwrap();
        assert_eq!(
            decoded,
            fields(&[("x-forwarded-for", "10.0.0.1"), ("content-length", "5")])
        );
    }

    #[test]
    fn static_names_are_sent_as_indices() {
        let mut indexed = Vec::new();
        encode_field(b"content-type", b"text/plain", &mut indexed);
        // Index 31 with a 4-bit prefix takes two octets, then the value.
        let mut value_only = Vec::new();
        encode_string(b"text/plain", false, &mut value_only);
        assert_eq!(indexed.len(), 2 + value_only.len());
        assert_eq!(indexed[..2], [0x0f, 31 - 15]);
        let mut literal_name = vec![0x00];
        encode_string(b"content-type", false, &mut literal_name);
        literal_name.extend_from_slice(&value_only);
        assert!(indexed.len() < literal_name.len());
        let mut small_index = Vec::new();
        encode_field(b"cookie", b"a=b", &mut small_index);
        assert_eq!(small_index[0], 0x0f);
        assert_eq!(small_index[1], 32 - 15);
    }

    #[test]
    fn the_encoder_sends_strings_raw_and_the_test_huffman_coder_matches_the_rfc() {
        let mut out = Vec::new();
        encode_string(b"www.example.com", false, &mut out);
        assert_eq!(out[0], 15);
        assert_eq!(&out[1..], b"www.example.com");
        out.clear();
        huffman_encode(b"www.example.com", false, &mut out);
        assert_eq!(out, hex("f1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
    }

    #[test]
    fn random_blocks_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut decoder = Decoder::new(4096);
        for round in 0..10_000 {
            let mut block = rng.bytes(64);
            // Bias some blocks toward valid-looking literals so deeper paths are reached.
            if round % 3 == 0 && !block.is_empty() {
                block[0] = 0x40 | (block[0] & 0x3f);
            }
            let _ = decode_all(&mut decoder, &block);
            if round % 1000 == 0 {
                decoder = Decoder::new(4096);
            }
        }
    }
}
