//! The relay's log macros: `crate::log_warn!` and friends, written like
//! `log::warn!` and producing the same record (level, target and module
//! path `module_path!()`, the caller's file and line).
//!
//! The difference is size: `log`'s macros build the record and call the
//! logger at every call site (about 130 bytes of code each), these check
//! the level where they are and hand the rest to one out-of-line function
//! ([`line`]). A disabled level costs the same as with `log`: a load and a
//! compare, the message's arguments never evaluated.

/// Writes one log record for the calling site; the level was checked.
#[doc(hidden)]
#[inline(never)]
#[track_caller]
pub fn line(level: log::Level, module: &'static str, args: std::fmt::Arguments<'_>) {
    let loc = std::panic::Location::caller();
    log::logger().log(
        &log::Record::builder()
            .args(args)
            .level(level)
            .target(module)
            .module_path_static(Some(module))
            .file_static(Some(loc.file()))
            .line(Some(loc.line()))
            .build(),
    );
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log {
    ($lvl:expr, $($arg:tt)+) => {{
        let lvl = $lvl;
        if lvl <= ::log::STATIC_MAX_LEVEL && lvl <= ::log::max_level() {
            $crate::logging::site::line(lvl, ::std::module_path!(), ::std::format_args!($($arg)+));
        }
    }};
}

/// `log::error!`, with the record built out of line.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)+) => { $crate::__relay_log!(::log::Level::Error, $($arg)+) };
}

/// `log::warn!`, with the record built out of line.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)+) => { $crate::__relay_log!(::log::Level::Warn, $($arg)+) };
}

/// `log::info!`, with the record built out of line.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)+) => { $crate::__relay_log!(::log::Level::Info, $($arg)+) };
}

/// `log::debug!`, with the record built out of line.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)+) => { $crate::__relay_log!(::log::Level::Debug, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    /// What the test logger saw: level, target, module path, file, line, text.
    type Seen = (
        log::Level,
        String,
        Option<String>,
        Option<String>,
        Option<u32>,
        String,
    );

    static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            SEEN.lock().unwrap().push((
                r.level(),
                r.target().to_owned(),
                r.module_path().map(str::to_owned),
                r.file().map(str::to_owned),
                r.line(),
                r.args().to_string(),
            ));
        }
        fn flush(&self) {}
    }

    /// The macros produce the record `log`'s own macros would: same level,
    /// target, module path, file and line (the macro call's, not this
    /// module's function), same text.
    #[test]
    fn a_relay_line_is_the_record_log_would_write() {
        log::set_logger(&Capture).expect("no other unit test installs a logger");
        log::set_max_level(log::LevelFilter::Info);
        let n = 7;
        let ours = line!() + 1;
        crate::log_warn!("queue full: {n} waiting");
        let theirs = line!() + 1;
        log::warn!("queue full: {n} waiting");
        crate::log_debug!("not written at info: {}", panic_if_evaluated());
        let seen = SEEN.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let (a, b) = (&seen[0], &seen[1]);
        assert_eq!(a.4, Some(ours));
        assert_eq!(b.4, Some(theirs));
        assert_eq!(
            (&a.0, &a.1, &a.2, &a.3, &a.5),
            (&b.0, &b.1, &b.2, &b.3, &b.5)
        );
        assert_eq!(a.5, "queue full: 7 waiting");
        assert_eq!(a.1, module_path!());
        assert_eq!(a.3.as_deref(), Some(file!()));
    }

    fn panic_if_evaluated() -> u32 {
        panic!("a disabled level's arguments are not evaluated");
    }
}
