//! Enums whose variants each have one name, stored and sent as text.

/// Declares such an enum from one list of `Variant = "name"` pairs, with `ALL` (every variant,
/// in declaration order), `as_str` and `parse` generated from it, so a variant's name is
/// written once and the three cannot disagree. Attributes (derives, serde renames, docs) are
/// passed through; `parse` is an exact match of `as_str`.
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$m:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vm:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$m])*
        $vis enum $name {
            $( $(#[$vm])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            /// The variant's name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The variant named `text` (exactly as [`Self::as_str`] writes it).
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::directory::{ApprovalStatus, SignUpStatus};
    use crate::offering::model::{IdentityClaim, PosixPool, UsernamePolicy};
    use crate::workflow::lifecycle::{SubscriptionStatus, Target};
    use crate::workflow::product::ProductType;
    use crate::workflow::status::{ProcessStatus, StepStatus};

    /// Each name parses back to its variant, and is what serde writes (the API and the
    /// database see one name per variant).
    fn check<T: Copy + PartialEq + std::fmt::Debug + serde::Serialize>(
        all: &[T],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) {
        for &v in all {
            assert_eq!(parse(as_str(v)), Some(v));
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::json!(as_str(v))),
                "{v:?}"
            );
        }
        assert_eq!(parse("no such name"), None);
    }

    #[test]
    fn names_parse_back_and_are_what_serde_writes() {
        check(&ApprovalStatus::ALL, ApprovalStatus::as_str, ApprovalStatus::parse);
        check(&SignUpStatus::ALL, SignUpStatus::as_str, SignUpStatus::parse);
        check(&UsernamePolicy::ALL, UsernamePolicy::as_str, UsernamePolicy::parse);
        check(&PosixPool::ALL, PosixPool::as_str, PosixPool::parse);
        check(&IdentityClaim::ALL, IdentityClaim::as_str, IdentityClaim::parse);
        check(
            &SubscriptionStatus::ALL,
            SubscriptionStatus::as_str,
            SubscriptionStatus::parse,
        );
        check(&Target::ALL, Target::as_str, Target::parse);
        check(&ProcessStatus::ALL, ProcessStatus::as_str, ProcessStatus::parse);
        check(&StepStatus::ALL, StepStatus::as_str, StepStatus::parse);
        check(&ProductType::ALL, ProductType::as_str, ProductType::parse);
    }
}
