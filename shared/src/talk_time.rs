//! `TalkTime`: the sender's local time of day carried in a `talk` datagram.
//!
//! The seed writes `DateTime.Now.ToLongTimeString()`, which in its zh-CN
//! locale reads `9:05:07` or `14:03:27`; other locales write `2:03:27 PM`
//! and the like. A message is never dropped for its clock format: any short
//! printable field is kept as sent, and [`TalkTime::time_of_day`] reads the
//! common forms when a program wants numbers.

use std::fmt;

/// Most characters a time field may have.
pub const MAX_TIME_CHARS: usize = 32;

/// The time field of a `talk`: 1 to [`MAX_TIME_CHARS`] characters, no control
/// characters, no `,`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TalkTime(String);

/// Why a text is not a time field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("the time field is empty")]
    Empty,
    #[error("the time field has more than {MAX_TIME_CHARS} characters")]
    TooLong,
    #[error("the time field contains {0:?}")]
    ForbiddenChar(char),
}

/// A time of day read from a [`TalkTime`], 24-hour clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl TalkTime {
    /// Validates a received time field.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        if text.is_empty() {
            return Err(TimeError::Empty);
        }
        if text.chars().count() > MAX_TIME_CHARS {
            return Err(TimeError::TooLong);
        }
        if let Some(ch) = text.chars().find(|&c| c.is_control() || c == ',') {
            return Err(TimeError::ForbiddenChar(ch));
        }
        Ok(Self(text.to_owned()))
    }

    /// The seed's own format, `H:MM:SS` (hour without a leading zero).
    pub fn from_time_of_day(time: TimeOfDay) -> Self {
        Self(time.to_string())
    }

    /// The field as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads `H:MM:SS` or `HH:MM:SS`, optionally followed by `AM`/`PM`
    /// (with or without a space, any case) or preceded by `上午`/`下午`.
    pub fn time_of_day(&self) -> Option<TimeOfDay> {
        let text = self.0.trim();
        let (text, half) = split_meridiem(text);
        let mut parts = text.split(':');
        let hour = parse_two_digits(parts.next()?, true)?;
        let minute = parse_two_digits(parts.next()?, false)?;
        let second = parse_two_digits(parts.next()?, false)?;
        if parts.next().is_some() || minute > 59 || second > 59 {
            return None;
        }
        let hour = match half {
            None if hour <= 23 => hour,
            Some(Half::Am) if (1..=12).contains(&hour) => hour % 12,
            Some(Half::Pm) if (1..=12).contains(&hour) => hour % 12 + 12,
            _ => return None,
        };
        Some(TimeOfDay {
            hour,
            minute,
            second,
        })
    }

    /// One space-free token for line-oriented output: the 24-hour
    /// `H:MM:SS` when the field can be read, otherwise the field with white
    /// space replaced by `_`.
    pub fn display_token(&self) -> String {
        match self.time_of_day() {
            Some(t) => t.to_string(),
            None => self
                .0
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect(),
        }
    }
}

enum Half {
    Am,
    Pm,
}

fn split_meridiem(text: &str) -> (&str, Option<Half>) {
    if let Some(rest) = text.strip_prefix("上午") {
        return (rest.trim(), Some(Half::Am));
    }
    if let Some(rest) = text.strip_prefix("下午") {
        return (rest.trim(), Some(Half::Pm));
    }
    let upper_tail = |suffix: &str| {
        text.len() >= 2
            && text.is_char_boundary(text.len() - 2)
            && text[text.len() - 2..].eq_ignore_ascii_case(suffix)
    };
    if upper_tail("AM") {
        return (text[..text.len() - 2].trim_end(), Some(Half::Am));
    }
    if upper_tail("PM") {
        return (text[..text.len() - 2].trim_end(), Some(Half::Pm));
    }
    (text, None)
}

fn parse_two_digits(text: &str, allow_one: bool) -> Option<u8> {
    let ok_len = text.len() == 2 || (allow_one && text.len() == 1);
    if !ok_len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

impl fmt::Display for TalkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TalkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tod(h: u8, m: u8, s: u8) -> Option<TimeOfDay> {
        Some(TimeOfDay {
            hour: h,
            minute: m,
            second: s,
        })
    }

    #[test]
    fn seed_zh_cn_long_times_are_read() {
        assert_eq!(
            TalkTime::parse("9:05:07").unwrap().time_of_day(),
            tod(9, 5, 7)
        );
        assert_eq!(
            TalkTime::parse("14:03:27").unwrap().time_of_day(),
            tod(14, 3, 27)
        );
        assert_eq!(
            TalkTime::parse("09:05:07").unwrap().time_of_day(),
            tod(9, 5, 7)
        );
        assert_eq!(
            TalkTime::parse("0:00:00").unwrap().time_of_day(),
            tod(0, 0, 0)
        );
    }

    #[test]
    fn twelve_hour_forms_are_read() {
        assert_eq!(
            TalkTime::parse("2:03:27 PM").unwrap().time_of_day(),
            tod(14, 3, 27)
        );
        assert_eq!(
            TalkTime::parse("12:00:01 am").unwrap().time_of_day(),
            tod(0, 0, 1)
        );
        assert_eq!(
            TalkTime::parse("12:00:01PM").unwrap().time_of_day(),
            tod(12, 0, 1)
        );
        assert_eq!(
            TalkTime::parse("下午2:03:27").unwrap().time_of_day(),
            tod(14, 3, 27)
        );
        assert_eq!(
            TalkTime::parse("上午9:05:07").unwrap().time_of_day(),
            tod(9, 5, 7)
        );
    }

    #[test]
    fn odd_fields_are_kept_but_not_read() {
        for text in [
            "24:00:00",
            "9:5:07",
            "9:05",
            "noon",
            "13:00:00 PM",
            "9:05:07:01",
        ] {
            let time = TalkTime::parse(text).unwrap();
            assert_eq!(time.time_of_day(), None, "{text}");
            assert_eq!(time.as_str(), text);
        }
        assert_eq!(
            TalkTime::parse("high noon").unwrap().display_token(),
            "high_noon"
        );
        assert_eq!(
            TalkTime::parse("2:03:27 PM").unwrap().display_token(),
            "14:03:27"
        );
    }

    #[test]
    fn empty_long_and_control_fields_are_refused() {
        assert_eq!(TalkTime::parse(""), Err(TimeError::Empty));
        assert_eq!(TalkTime::parse(&"1".repeat(33)), Err(TimeError::TooLong));
        assert_eq!(
            TalkTime::parse("9:05\n:07"),
            Err(TimeError::ForbiddenChar('\n'))
        );
    }

    #[test]
    fn own_format_has_no_leading_zero_on_the_hour() {
        let t = TalkTime::from_time_of_day(TimeOfDay {
            hour: 9,
            minute: 5,
            second: 7,
        });
        assert_eq!(t.as_str(), "9:05:07");
    }
}
