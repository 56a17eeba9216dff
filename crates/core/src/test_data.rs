//! Deterministic bytes for tests, with no dependency, so that any crate's tests can use them
//! (feature `test-data`; `testing` includes it): one generator instead of a copy per test module.

/// Deterministic source-code-like text (identifiers, keywords, numbers, indentation) that
/// compresses like real source (zstd: about 3 to 4 times) and never repeats a 64 KiB window.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "let", "fn", "match", "return", "self", "value", "count", "buffer", "error", "Some", "None", "Ok", "if",
        "else", "for", "in", "mut", "struct", "impl", "pub", "use", "name", "index", "result",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let r = next();
        out.extend(std::iter::repeat_n(b' ', (r % 4 * 4) as usize));
        for w in 0..(r >> 8) % 8 + 1 {
            let r = next();
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            if r >> 40 & 3 == 0 {
                out.extend_from_slice(format!("_{}", r >> 48 & 0xfff).as_bytes());
            }
        }
        out.extend_from_slice(if r >> 20 & 1 == 0 { b";\n" } else { b" {\n" });
    }
    out.truncate(len);
    out
}

/// Deterministic bytes that neither compress nor repeat, for test files.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
