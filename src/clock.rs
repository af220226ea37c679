//! Calendar formatting for the few timestamps tinydrop writes: RFC 3339 for
//! JSON listings and logs, IMF-fixdate for HTTP headers. UTC only, no crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment split into UTC calendar fields.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32, // 0 = Sunday
}

fn civil(t: SystemTime) -> Civil {
    // Times before 1970 only appear on broken clocks; show them as the epoch.
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date (Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// `2026-11-30T12:00:00Z`
pub fn rfc3339(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `Mon, 30 Nov 2026 12:00:00 GMT` (RFC 9110 IMF-fixdate).
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday as usize % 7],
        c.day,
        MONTHS[(c.month as usize + 11) % 12],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_epoch_is_a_thursday_in_1970() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn known_dates_format_exactly() {
        // 2026-11-30T12:00:00Z, a Monday.
        assert_eq!(rfc3339(at(1_796_040_000)), "2026-11-30T12:00:00Z");
        assert_eq!(
            http_date(at(1_796_040_000)),
            "Mon, 30 Nov 2026 12:00:00 GMT"
        );
        // A leap day.
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
    }
}
