//! The few tar records a transfer archive needs, written by hand so that the bytes are a function of the content
//! alone (mtime 0, uid/gid 0, no user names, fixed modes) and their length is known before anything is written
//! (`archive_size`). Names longer than ustar's 100 bytes and files of 8 GiB or more get a PAX extended header
//! (POSIX.1-2001), which every reader in use (Go's archive/tar in skopeo, GNU tar, bsdtar) understands.
//!
//! The reader accepts what the writer produces (and the same records from other ustar/PAX writers): regular
//! files, directories and PAX headers. Anything else (links, devices) is refused: an archive never needs them.

use std::io::{self, Read};

pub const BLOCK: u64 = 512;
/// The largest size ustar's 11 octal digits hold.
const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// PAX records a reader accepts, at most (a header is a few dozen bytes; this bounds memory).
const MAX_PAX: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// Bytes of padding after `size` bytes of data.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// The PAX records an entry needs, if any.
fn pax_records(name: &str, size: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if name.len() > 100 {
        out.extend(pax_record("path", name));
    }
    if size > USTAR_MAX_SIZE {
        out.extend(pax_record("size", &size.to_string()));
    }
    (!out.is_empty()).then_some(out)
}

/// One `"<len> <key>=<value>\n"` record; `<len>` counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// Bytes the header(s) of an entry take (not its data).
pub fn header_len(name: &str, size: u64) -> u64 {
    match pax_records(name, size) {
        Some(p) => BLOCK + p.len() as u64 + padding(p.len() as u64) + BLOCK,
        None => BLOCK,
    }
}

/// Total bytes of an entry: header(s), data and padding.
pub fn entry_len(name: &str, size: u64) -> u64 {
    header_len(name, size) + size + padding(size)
}

/// The header(s) of an entry, ready to write before its `size` bytes of data.
pub fn header(name: &str, size: u64, kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK as usize * 3);
    if let Some(p) = pax_records(name, size) {
        // The PAX header's own name is informative only; keep it short and fixed.
        out.extend(ustar_block("PaxHeader", p.len() as u64, b'x', 0o644));
        let n = p.len() as u64;
        out.extend(p);
        out.extend(std::iter::repeat_n(0u8, padding(n) as usize));
    }
    let (flag, mode) = match kind {
        Kind::File => (b'0', 0o644),
        Kind::Dir => (b'5', 0o755),
    };
    // With a PAX header, the ustar fields are placeholders that readers ignore.
    let short: String = if name.len() > 100 {
        name.chars().take(100).collect()
    } else {
        name.to_string()
    };
    out.extend(ustar_block(&short, size.min(USTAR_MAX_SIZE), flag, mode));
    out
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn ustar_block(name: &str, size: u64, flag: u8, mode: u64) -> [u8; BLOCK as usize] {
    let mut b = [0u8; BLOCK as usize];
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], mode);
    octal(&mut b[108..116], 0); // uid
    octal(&mut b[116..124], 0); // gid
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], 0); // mtime
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| x as u64).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// An entry's header as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub kind: Kind,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("the archive ended in the middle of a tar header")]
    Truncated,
    #[error("a tar header is corrupt: {0}")]
    Corrupt(String),
    #[error("entry '{0}' is a link or special file: a transfer archive holds only files and directories")]
    Unsupported(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the stream ended before the first byte.
fn read_block(r: &mut dyn Read, buf: &mut [u8]) -> Result<bool, TarError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(TarError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn parse_octal(field: &[u8], what: &str) -> Result<u64, TarError> {
    if field[0] & 0x80 != 0 {
        // GNU base-256: big-endian after the marker bit.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or_else(|| TarError::Corrupt(format!("{what} is too large")))?;
        }
        return Ok(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| TarError::Corrupt(format!("{what} '{s}' is not octal")))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Reads the next entry's header(s), leaving the reader at its data; `None` at the end-of-archive marker (or at
/// the end of the stream). The caller reads `size` bytes of data and then `padding(size)`.
pub fn next_entry(r: &mut dyn Read) -> Result<Option<Entry>, TarError> {
    let mut path_override = None;
    let mut size_override = None;
    loop {
        let mut b = [0u8; BLOCK as usize];
        if !read_block(r, &mut b)? {
            return Ok(None);
        }
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let stored: u64 = parse_octal(&b[148..156], "checksum")?;
        let mut copy = b;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&x| x as u64).sum();
        if sum != stored {
            return Err(TarError::Corrupt(format!(
                "checksum {stored:o} does not match the header's {sum:o}"
            )));
        }
        let mut name = cstr(&b[..100]);
        if &b[257..262] == b"ustar" {
            let prefix = cstr(&b[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size = parse_octal(&b[124..136], "size")?;
        match b[156] {
            b'x' | b'g' => {
                if size > MAX_PAX {
                    return Err(TarError::Corrupt(format!("a PAX header of {size} bytes")));
                }
                let mut data = vec![0u8; (size + padding(size)) as usize];
                if !read_block(r, &mut data)? {
                    return Err(TarError::Truncated);
                }
                data.truncate(size as usize);
                if b[156] == b'x' {
                    for (k, v) in parse_pax(&data)? {
                        match k.as_str() {
                            "path" => path_override = Some(v),
                            "size" => {
                                size_override =
                                    Some(v.parse::<u64>().map_err(|_| {
                                        TarError::Corrupt(format!("PAX size '{v}'"))
                                    })?)
                            }
                            _ => {}
                        }
                    }
                }
            }
            b'0' | 0 | b'5' => {
                let kind = if b[156] == b'5' {
                    Kind::Dir
                } else {
                    Kind::File
                };
                return Ok(Some(Entry {
                    name: path_override.unwrap_or(name),
                    size: size_override.unwrap_or(size),
                    kind,
                }));
            }
            _ => return Err(TarError::Unsupported(path_override.unwrap_or(name))),
        }
    }
}

fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, String)>, TarError> {
    let bad = || TarError::Corrupt("malformed PAX record".into());
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = std::str::from_utf8(&data[sp + 1..len - 1]).map_err(|_| bad())?;
        let (k, v) = rec.split_once('=').ok_or_else(bad)?;
        out.push((k.to_string(), v.to_string()));
        data = &data[len..];
    }
    Ok(out)
}

/// Reads and discards `n` bytes (padding), failing if the stream ends first.
pub fn skip(r: &mut dyn Read, n: u64) -> Result<(), TarError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(TarError::Truncated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_and_without_pax() {
        let long = format!("blobs/sha512/{}", "a".repeat(128));
        for (name, size, kind) in [
            ("oci-layout", 30u64, Kind::File),
            ("blobs/", 0, Kind::Dir),
            (long.as_str(), 5, Kind::File),
            ("big", USTAR_MAX_SIZE + 1, Kind::File),
        ] {
            let h = header(name, size, kind);
            assert_eq!(h.len() as u64, header_len(name, size));
            let e = next_entry(&mut &h[..]).unwrap().unwrap();
            assert_eq!(
                e,
                Entry {
                    name: name.into(),
                    size,
                    kind
                }
            );
        }
        assert_eq!(pax_record("path", "x"), b"9 path=x\n");
        // Around a change in the number of digits, the length still counts itself.
        let r = pax_record("path", &"y".repeat(92));
        assert_eq!(
            r.len(),
            std::str::from_utf8(&r)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        );
    }

    #[test]
    fn a_flipped_header_byte_is_caught() {
        let mut h = header("index.json", 10, Kind::File);
        h[3] ^= 1;
        assert!(matches!(next_entry(&mut &h[..]), Err(TarError::Corrupt(_))));
        assert!(matches!(
            next_entry(&mut &h[..100]),
            Err(TarError::Truncated)
        ));
    }
}
