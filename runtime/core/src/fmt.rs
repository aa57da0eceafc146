//! One logging shim over `defmt`, `log` or nothing, so the rest of the crate logs the
//! same way on a Cortex-M (defmt) and on Linux (log). Modelled on embassy-sync's fmt.rs.
#![allow(unused_macros, unused_imports)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` of edgetune are mutually exclusive: enable one");

macro_rules! warning {
    ($($x:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::warn!($($x)*);
        #[cfg(feature = "log")]
        ::log::warn!($($x)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        { let _ = ($( $x )*); }
    }};
}

macro_rules! debug {
    ($($x:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::debug!($($x)*);
        #[cfg(feature = "log")]
        ::log::debug!($($x)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        { let _ = ($( $x )*); }
    }};
}

pub(crate) use {debug, warning};
