//! Durations and sizes as people say them on a call: "2s", "1m 5s",
//! "1.2 MiB". Every duration a person reads (reasons, the table, the board,
//! log lines) goes through [`human_duration`], never a `Debug` form or
//! `humantime::format_duration` (which prints "1s 995ms 104us 438ns").

use std::time::Duration;

/// A duration as people say it on a call: "120ms", "4.2s", "42s", "6m 5s",
/// "2h 3m". Never "0s" for a small non-zero figure.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let pair = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit} {small}{small_unit}")
        }
    };
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 10.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            format!("{}s", tenths as u64)
        } else {
            format!("{tenths:.1}s")
        }
    } else if secs < 60.0 {
        format!("{}s", secs.round() as u64)
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        pair(s / 60, "m", s % 60, "s")
    } else if secs < 86400.0 {
        let m = (secs / 60.0).round() as u64;
        pair(m / 60, "h", m % 60, "m")
    } else {
        let h = (secs / 3600.0).round() as u64;
        pair(h / 24, "d", h % 24, "h")
    }
}

/// "1.2 MiB": a byte count as people read it.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_millis(840)), "840ms");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_millis(4240)), "4.2s");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m 5s");
        assert_eq!(human_duration(Duration::from_secs(365)), "6m 5s");
        assert_eq!(human_duration(Duration::from_secs(7380)), "2h 3m");
        // A deadline's remainder, as a timeout reason used to print it.
        assert_eq!(human_duration(Duration::new(1, 995_104_438)), "2s");
    }

    #[test]
    fn sizes_as_people_read_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
