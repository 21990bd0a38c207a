//! Task timestamps written as chrono writes them (RFC 3339, UTC as `Z`, 0, 3, 6 or 9
//! digits of fraction), straight into a buffer. chrono's own `Serialize` goes through
//! `fmt` a character at a time, and a page of 50 tasks carries 300 timestamps: that was
//! about a tenth of the api's CPU for a list.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(at, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(len) => serializer.serialize_str(std::str::from_utf8(&buf[..len]).expect("ASCII")),
        None => at.serialize(serializer),
    }
}

pub fn serialize_option<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// `None` for what chrono writes differently: years outside 0..=9999 and leap seconds.
fn write(at: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = Out { buf, len: 0 };
    out.digits(year, 4);
    for (separator, value) in
        [(b'-', at.month()), (b'-', at.day()), (b'T', at.hour()), (b':', at.minute()), (b':', at.second())]
    {
        out.byte(separator);
        out.digits(value, 2);
    }
    let (fraction, width) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if width > 0 {
        out.byte(b'.');
        out.digits(fraction, width);
    }
    out.byte(b'Z');
    Some(out.len)
}

struct Out<'a> {
    buf: &'a mut [u8; 30],
    len: usize,
}

impl Out<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `value` in exactly `width` decimal digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for place in (0..width).rev() {
            self.byte(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[derive(Serialize)]
    struct Ours(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    #[test]
    fn writes_what_chrono_writes() {
        let seconds = [0, 1, 59, 86_399, 951_782_400, 1_764_503_332, 253_402_300_799, -62_135_596_800];
        let nanos = [0, 1, 999, 1_000, 158_904_000, 123_000_000, 5_000_000, 999_999_999, 100];
        for s in seconds {
            for n in nanos {
                let at = Utc.timestamp_opt(s, n).unwrap();
                let chrono = serde_json::to_string(&at).unwrap();
                assert_eq!(serde_json::to_string(&Ours(at)).unwrap(), chrono, "{s} s {n} ns");
            }
        }
    }

    #[test]
    fn years_beyond_four_digits_and_leap_seconds_fall_back_to_chrono() {
        let far = Utc.with_ymd_and_hms(12_345, 6, 7, 8, 9, 10).unwrap();
        let before_year_zero = Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap();
        let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
        for at in [far, before_year_zero, leap] {
            assert_eq!(serde_json::to_string(&Ours(at)).unwrap(), serde_json::to_string(&at).unwrap());
        }
    }
}
