use super::operations::check_state;
use super::*;

#[test]
fn rate_limits_are_read_from_the_headers() {
    let mut h = HeaderMap::new();
    assert_eq!(
        rate_limit_wait(StatusCode::FORBIDDEN, &h),
        None,
        "a plain 403 is a permission error"
    );
    h.insert("retry-after", "7".parse().unwrap());
    assert_eq!(
        rate_limit_wait(StatusCode::FORBIDDEN, &h),
        Some(Duration::from_secs(7))
    );
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-remaining", "0".parse().unwrap());
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30;
    h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
    let wait = rate_limit_wait(StatusCode::FORBIDDEN, &h).unwrap();
    assert!(
        wait >= Duration::from_secs(29) && wait <= Duration::from_secs(32),
        "{wait:?}"
    );
    assert!(rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()).is_some());
    assert_eq!(check_state("in_progress", None), CiState::Pending);
    assert_eq!(check_state("completed", Some("neutral")), CiState::Success);
    assert_eq!(
        check_state("completed", Some("timed_out")),
        CiState::Failure
    );
}
