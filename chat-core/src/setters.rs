//! [`config_setters!`](crate::config_setters): the one style every public config of the
//! workspace follows (docs/ARCHITECTURE.md, decision 20).

/// Generates chainable setters for fields of a config struct: for every
/// `with_x => x: T`, a `#[must_use] pub fn with_x(self, value: T) -> Self` that sets
/// field `x` and returns the config, documented as a link to the field.
///
/// Every public config of the workspace has this shape: a `#[non_exhaustive]` struct
/// with public fields and a `Default` (or a `new` taking what has no default). Outside
/// its crate it cannot be written as a struct literal, so adding a field is not a
/// breaking change; it is built from the default and changed field by field or with
/// the chainable setters, which this macro writes:
///
/// ```
/// use std::time::Duration;
/// use chat_core::Config;
///
/// let config = Config::default()
///     .with_join_history(20)
///     .with_typing_timeout(Duration::from_secs(3));
/// let mut same = Config::default();
/// same.join_history = 20;
/// same.typing_timeout = Duration::from_secs(3);
/// assert_eq!(config, same);
/// ```
///
/// A `Store` or `Transport` crate may use it for its own config, to follow the same
/// style:
///
/// ```
/// /// Settings of my store.
/// #[derive(Debug, Clone, Default)]
/// #[non_exhaustive]
/// pub struct MyConfig {
///     /// Connections in the pool.
///     pub pool_size: usize,
/// }
///
/// chat_core::config_setters! {
///     MyConfig {
///         with_pool_size => pool_size: usize,
///     }
/// }
///
/// assert_eq!(MyConfig::default().with_pool_size(4).pool_size, 4);
/// ```
#[macro_export]
macro_rules! config_setters {
    ($config:ty { $($setter:ident => $field:ident : $type:ty),* $(,)? }) => {
        impl $config {
            $(
                #[doc = concat!(
                    "Sets [`", stringify!($field), "`](Self::", stringify!($field),
                    ") and returns the config, for chaining."
                )]
                #[must_use]
                pub fn $setter(mut self, value: $type) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
