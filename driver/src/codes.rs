//! Enums with numeric codes at a boundary (register fields, wire formats), declared once with
//! [`code_enum!`](crate::code_enum) so the code table is written only as the discriminants.
//!
//! A declared enum gets `code()`, `from_code()`, `From<Enum> for repr` and
//! `TryFrom<repr> for Enum` (with [`UnknownCode`] as the error). An enum with an
//! `other Variant` fallback keeps unknown codes in that variant instead, so decoding is total
//! and never loses bits.

/// A numeric code no variant of the enum has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("unknown code {0}")]
pub struct UnknownCode<T: std::fmt::Display + std::fmt::Debug>(pub T);

/// Declares an enum whose variants have numeric codes, and the conversions between the two.
///
/// Two forms. Closed (`repr` is the primitive type; unknown codes are refused):
///
/// ```
/// driver::code_enum! {
///     /// A colour.
///     #[derive(Clone, Copy, Debug, PartialEq, Eq)]
///     pub enum Colour: u8 {
///         /// Red.
///         Red = 1,
///         /// Green.
///         Green = 2,
///     }
/// }
/// assert_eq!(Colour::Green.code(), 2);
/// assert_eq!(Colour::from_code(1), Some(Colour::Red));
/// assert_eq!(Colour::try_from(3u8), Err(driver::codes::UnknownCode(3)));
/// assert_eq!(u8::from(Colour::Red), 1);
/// ```
///
/// Open (`other Variant`, written first, keeps any code that has no variant of its own):
///
/// ```
/// driver::code_enum! {
///     /// A status.
///     #[derive(Clone, Copy, Debug, PartialEq, Eq)]
///     pub enum Status: u32 {
///         /// A code this side does not know.
///         other Other,
///         /// Fine.
///         Ok = 0,
///     }
/// }
/// assert_eq!(Status::from_code(7), Status::Other(7));
/// assert_eq!(Status::Other(7).code(), 7);
/// assert_eq!(Status::from(0), Status::Ok);
/// ```
#[macro_export]
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $code ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The numeric code.
            #[must_use]
            pub const fn code(self) -> $repr {
                self as $repr
            }

            /// The variant of a code; `None` for a code no variant has.
            #[must_use]
            pub const fn from_code(c: $repr) -> Option<Self> {
                $( if c == $name::$variant as $repr {
                    return Some($name::$variant);
                } )+
                None
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                v.code()
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = $crate::codes::UnknownCode<$repr>;
            fn try_from(c: $repr) -> Result<Self, Self::Error> {
                $name::from_code(c).ok_or($crate::codes::UnknownCode(c))
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $(#[$ometa:meta])* other $other:ident,
            $( $(#[$vmeta:meta])* $variant:ident = $code:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            $(#[$ometa])* $other($repr),
        }

        impl $name {
            /// The numeric code.
            #[must_use]
            pub const fn code(self) -> $repr {
                match self {
                    $( $name::$variant => $code, )+
                    $name::$other(c) => c,
                }
            }

            /// The variant of a code (the fallback variant for a code no other variant has).
            #[must_use]
            pub const fn from_code(c: $repr) -> Self {
                $( if c == $code {
                    return $name::$variant;
                } )+
                $name::$other(c)
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                v.code()
            }
        }

        impl From<$repr> for $name {
            fn from(c: $repr) -> Self {
                $name::from_code(c)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::code_enum! {
        /// Test enum.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Closed: u16 {
            /// A.
            A = 3,
            /// B.
            B = 300,
        }
    }

    crate::code_enum! {
        /// Test enum.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Open: u8 {
            /// Anything else.
            other Other,
            /// A.
            A = 0,
            /// B.
            B = 9,
        }
    }

    #[test]
    fn codes_round_trip() {
        for &v in Closed::ALL {
            assert_eq!(Closed::try_from(v.code()), Ok(v));
        }
        assert_eq!(Closed::from_code(4), None);
        for c in 0..=255u8 {
            assert_eq!(Open::from_code(c).code(), c);
        }
        assert_eq!(Open::from(9), Open::B);
        assert_eq!(u8::from(Open::Other(200)), 200);
    }
}
