//! `Debug` for types that hold secrets: every field is shown except the secret ones, which
//! show only whether they are set. A `?value` in a log line then cannot leak a password, a
//! token or a key.

/// How a secret field appears in `Debug` output.
pub trait Redacted {
    fn redacted(&self) -> &'static str;
}

impl Redacted for String {
    fn redacted(&self) -> &'static str {
        "<redacted>"
    }
}

impl<T> Redacted for Option<T> {
    fn redacted(&self) -> &'static str {
        if self.is_some() { "Some(<redacted>)" } else { "None" }
    }
}

/// `debug_redacted!(Type { shown, fields } redact { secret, fields })` implements `Debug`.
#[macro_export]
macro_rules! debug_redacted {
    ($t:ident { $($field:ident),* $(,)? } redact { $($secret:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                use $crate::redact::Redacted as _;
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    $(.field(stringify!($secret), &format_args!("{}", self.$secret.redacted())))*
                    .finish()
            }
        }
    };
}
