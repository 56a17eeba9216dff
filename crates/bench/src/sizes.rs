//! Sizes on the command line: `4096`, `4KiB`, `64MiB`, `1GiB`.

use anyhow::{bail, Result};

pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let Ok(n) = num.parse::<u64>() else { bail!("{s:?} is not a size (e.g. 4096, 4KiB, 64MiB, 1GiB)") };
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => bail!("unknown unit in {s:?}: use B, KiB, MiB or GiB"),
    };
    n.checked_mul(mult).ok_or_else(|| anyhow::anyhow!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("12TB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
