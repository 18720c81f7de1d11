//! The query parameters the endpoints understand, read as Go's `r.FormValue` reads them (the
//! first value of each name wins), and validated.

use crate::error::ProfileError;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct ProfileQuery {
    /// `seconds`, unparsed: its meaning depends on the endpoint.
    pub seconds: Option<String>,
    /// `debug`: non-numeric values count as 0, as in Go.
    pub debug: i64,
    /// `own=1`: include the profiler's own allocations, each under its part's root frame.
    pub own: bool,
}

impl ProfileQuery {
    pub fn parse(raw: Option<&str>) -> ProfileQuery {
        let mut q = ProfileQuery::default();
        let mut seen_debug = false;
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match &*k {
                "seconds" if q.seconds.is_none() => q.seconds = Some(v.into_owned()),
                "debug" if !seen_debug => {
                    seen_debug = true;
                    q.debug = v.parse().unwrap_or(0);
                }
                "own" => q.own = v == "1" || v == "true",
                _ => {}
            }
        }
        q
    }

    /// `seconds` as a duration: a positive whole number no larger than `max`.
    pub fn duration(&self, max: Duration) -> Result<Option<Duration>, ProfileError> {
        let Some(s) = &self.seconds else {
            return Ok(None);
        };
        match s.trim().parse::<u64>() {
            Ok(n) if n > 0 && n <= max.as_secs() => Ok(Some(Duration::from_secs(n))),
            Ok(n) if n > 0 => Err(ProfileError::bad_request(format!(
                "\"seconds\" of {n} exceeds this server's limit of {} seconds",
                max.as_secs()
            ))),
            _ => Err(ProfileError::bad_request(
                "invalid value for \"seconds\" - must be a positive integer",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_and_bad_debug_is_zero() {
        let q = ProfileQuery::parse(Some("seconds=5&seconds=9&debug=x&debug=1"));
        assert_eq!(q.seconds.as_deref(), Some("5"));
        assert_eq!(q.debug, 0);
    }

    #[test]
    fn seconds_must_be_a_positive_integer_within_the_cap() {
        let max = Duration::from_secs(300);
        let d = |s: &str| ProfileQuery::parse(Some(s)).duration(max);
        assert_eq!(d("seconds=2").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(d("").unwrap(), None);
        for bad in [
            "seconds=0",
            "seconds=-1",
            "seconds=1.5",
            "seconds=abc",
            "seconds=",
            "seconds=301",
            "seconds=99999999999999999999999",
        ] {
            assert_eq!(d(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
