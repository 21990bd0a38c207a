//! How the services' allocator gives memory back.
//!
//! mimalloc 3 defaults suit a short burst, not a service that idles between bursts:
//! - it asks for transparent huge pages on its arena, so each touched 2 MiB counts in
//!   full towards resident memory (12 MB of an idle api's 25 MB). The `no_thp` build
//!   feature (Cargo.toml) turns that off at compile time;
//! - it returns freed pages to the OS only a second later, and only when it next
//!   allocates: an api that goes quiet after a burst keeps the burst's peak resident.
//!   [`release_freed_memory_at_once`] makes the return immediate.
//!
//! Measured against one api replica (docs/benchmarks.md): after a burst of large list
//! responses 119 MB resident stayed with the defaults, 34 MB with both changes; the
//! request rate under wrk did not drop.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e`, which the Rust bindings don't
/// name. A test pins it to the option's documented default, so a mimalloc upgrade that
/// renumbers the options fails the build's tests instead of setting the wrong one.
const PURGE_DELAY: mi_option_t = 15;

/// Frees pages to the OS as soon as mimalloc no longer needs them. Call before the
/// service starts its threads.
pub fn release_freed_memory_at_once() {
    // SAFETY: setting an option is a plain store mimalloc supports at any time.
    unsafe { mi_option_set(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    fn purge_delay_ms() -> std::os::raw::c_long {
        // SAFETY: reading an option has no preconditions.
        unsafe { mi_option_get(PURGE_DELAY) }
    }

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // mimalloc 3's default purge delay (mimalloc.h): no other option defaults to it.
        assert_eq!(purge_delay_ms(), 1000, "option {PURGE_DELAY} is not mimalloc's purge_delay");
        release_freed_memory_at_once();
        assert_eq!(purge_delay_ms(), 0);
    }
}
