//! What the code `manifest!` generates names, and nothing else: the
//! compiled manifest types, the number conversion of bucket setters and the
//! error of partial `TryFrom` bridges. Not part of the API; see the crate
//! documentation's "Typed API" section for what hosts use.

pub use telemetry_protocol::compiled::{
    CompiledEvent, CompiledKind, CompiledManifest, CompiledProp, FORMAT,
};

/// A number a bucket prop accepts: every primitive integer and float. Only
/// the bucket it falls in is ever sent.
pub trait Number: Copy {
    /// The value as `f64`, which bucketing works in.
    fn to_f64(self) -> f64;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[allow(clippy::cast_precision_loss)] // Bucketing needs no more precision.
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
number!(
    f64, f32, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// A host enum's variant that the manifest's enum prop does not list (the
/// error of a `try event.prop = Type` bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this value is not one the manifest lists for the prop")]
pub struct NotInManifest;
