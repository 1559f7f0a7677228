//! The compact form of an audit record's fields: unsigned LEB128 varints (dictionary ids, optional integers) and
//! correlation ids as 16 raw bytes when they are canonical UUIDs. A pull's fields take about 35 bytes this way.

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_u(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// An optional signed integer: 0 for none, else its zig-zag form plus one.
pub fn put_opt_i(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => put_u(buf, 0),
        Some(i) => put_u(buf, (((i << 1) ^ (i >> 63)) as u64).wrapping_add(1)),
    }
}

/// Reads what [`put_u`] wrote, moving `pos`; `None` when the bytes end early or run over 64 bits.
pub fn get_u(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

pub fn get_opt_i(buf: &[u8], pos: &mut usize) -> Option<Option<i64>> {
    let v = get_u(buf, pos)?;
    if v == 0 {
        return Some(None);
    }
    let z = v - 1;
    Some(Some(((z >> 1) as i64) ^ -((z & 1) as i64)))
}

/// The 16 bytes of `s` when it is a UUID written the canonical way (lower-case, hyphenated), so that decoding
/// gives back exactly `s`.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        let hi = lower_hex(b[i])?;
        let lo = lower_hex(b[i + 1])?;
        out[n] = hi << 4 | lo;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The canonical text of 16 UUID bytes.
pub fn uuid_text(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(vs in proptest::collection::vec(any::<u64>(), 0..20),
                              is in proptest::collection::vec(proptest::option::of(any::<i64>()), 0..20)) {
            let mut buf = Vec::new();
            for v in &vs { put_u(&mut buf, *v); }
            for i in &is { put_opt_i(&mut buf, *i); }
            let mut pos = 0;
            for v in &vs { prop_assert_eq!(get_u(&buf, &mut pos), Some(*v)); }
            for i in &is { prop_assert_eq!(get_opt_i(&buf, &mut pos), Some(*i)); }
            prop_assert_eq!(pos, buf.len());
            prop_assert_eq!(get_u(&buf, &mut pos), None);
        }

        #[test]
        fn uuids_round_trip_exactly(b in any::<[u8; 16]>()) {
            let s = uuid_text(&b);
            prop_assert_eq!(uuid_bytes(&s), Some(b));
            prop_assert_eq!(uuid_bytes(&s.to_ascii_uppercase()).is_some(), s == s.to_ascii_uppercase());
        }
    }

    #[test]
    fn small_values_are_one_byte() {
        let mut buf = Vec::new();
        put_u(&mut buf, 127);
        put_opt_i(&mut buf, None);
        put_opt_i(&mut buf, Some(-1));
        assert_eq!(buf.len(), 3);
        assert_eq!(uuid_bytes("not-a-uuid"), None);
        assert_eq!(
            uuid_bytes("0f8fad5b-d9cb-469f-a165-70867728950e").map(|b| uuid_text(&b)),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e".into())
        );
    }
}

/// Microseconds since the epoch of a time in the stored form (`2026-12-07T08:00:00.123456Z`, see
/// `moat_store::time_fmt`), only when formatting them back gives exactly `s` (so the stored record reads back
/// byte for byte; any other spelling is kept as text).
pub fn micros_of(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000) + us)
}

/// The stored form of `micros` (the inverse of [`micros_of`]), appended to `out`.
pub fn push_time(out: &mut String, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let mut buf = [0u8; 27];
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, mo, 2);
    put(8, d, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    put(20, us, 6);
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        buf[i] = c;
    }
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

pub fn time_text(micros: i64) -> String {
    let mut s = String::with_capacity(27);
    push_time(&mut s, micros);
    s
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil and its inverse (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_times() {
        assert_eq!(micros_of("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(
            micros_of("2026-12-07T08:09:10.123456Z"),
            Some(1_796_630_950_123_456)
        );
        assert_eq!(
            time_text(1_796_630_950_123_456),
            "2026-12-07T08:09:10.123456Z"
        );
        assert_eq!(micros_of("2026-12-07T08:09:10Z"), None);
        assert_eq!(micros_of("2026-02-30T08:09:10.000000Z"), None);
        assert_eq!(
            micros_of("2024-02-29T00:00:00.000000Z").map(time_text),
            Some("2024-02-29T00:00:00.000000Z".into())
        );
    }

    proptest! {
        #[test]
        fn times_round_trip(us in 0i64..253_402_300_799_999_999) {
            prop_assert_eq!(micros_of(&time_text(us)), Some(us));
        }
    }
}
