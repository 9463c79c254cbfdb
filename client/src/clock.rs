//! The local time of day, in the form a `talk` datagram carries.

use chrono::Timelike;
use pigeon_shared::{TalkTime, TimeOfDay};

/// Now, on the local clock, as the seed writes it (`H:MM:SS`).
pub fn local_talk_time() -> TalkTime {
    let now = chrono::Local::now();
    // Hours, minutes and seconds from chrono are always below 24 and 60.
    let part = |value: u32| u8::try_from(value).unwrap_or(0);
    TalkTime::from_time_of_day(TimeOfDay {
        hour: part(now.hour()),
        minute: part(now.minute()),
        second: part(now.second()),
    })
}
