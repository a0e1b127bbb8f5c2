//! The conformance suite every [`Store`] backend must pass; compiled with the
//! `test-support` feature only, which backends and the server enable from their
//! dev-dependencies.
//!
//! Each scenario is an `async fn(&dyn Store)` for a fresh, migrated, empty store, in a file
//! of this folder by subject. [`conformance_tests!`](crate::conformance_tests) makes one
//! test of each in a backend's tests, so that a failing scenario hides none of the others.
//! The checks are plain `assert!`s so a failure names the property that broke.

mod batches;
mod chats;
mod deep_pages;
mod erasure;
mod jobs;
mod keys;
mod listings;
mod orphans;
mod resources;
mod search;
mod support;
mod webhooks;

pub use deep_pages::BUCKET_MISMATCHES;
pub use support::*;

use crate::Store;
use std::future::Future;
use std::pin::Pin;

/// A scenario running against one store.
pub type ScenarioRun<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// A scenario of the suite, for a fresh, migrated, empty store.
pub type Scenario = for<'a> fn(&'a dyn Store) -> ScenarioRun<'a>;

/// Every scenario of the suite as a [`Scenario`], by name.
pub mod scenarios {
    crate::conformance_tests!(@scenarios wrappers);
}

/// One test per conformance scenario, named after it. Each test awaits `run(scenario)`,
/// the backend's `async fn(`[`Scenario`]`)` that opens a fresh store (its own file or
/// database), runs the scenario on it and cleans up. The attributes given (such as
/// `#[tokio::test]`) go on every test.
///
/// ```text
/// mod conformance {
///     use colloquy_storage::conformance::Scenario;
///
///     async fn run(scenario: Scenario) {
///         let store = /* a fresh store */;
///         scenario(&store).await;
///     }
///
///     colloquy_storage::conformance_tests!(#[tokio::test] run: run);
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($(#[$($attr:tt)*])* run: $run:path) => {
        $crate::conformance_tests!(@scenarios tests [$(#[$($attr)*])*] $run);
    };
    // The scenarios, once: file and function.
    (@scenarios $then:ident $($args:tt)*) => {
        $crate::conformance_tests!(@$then $($args)* [
            keys::keys_and_auth,
            keys::tenancy,
            chats::chat_lifecycle_and_listing,
            chats::resume_and_groups,
            chats::group_event_order,
            listings::listings_count_every_change,
            deep_pages::deep_pages,
            batches::failed_batch_changes_nothing,
            batches::revocation_in_batches,
            batches::appends_only_batches,
            batches::large_batches,
            batches::active_chat_limit,
            orphans::orphaned_chats,
            jobs::reconstructions,
            jobs::reconstruction_jobs,
            jobs::failure_kinds,
            erasure::deletion,
            search::search,
            search::nul_characters,
            resources::resource_versions,
            resources::resource_listings,
            resources::resource_references,
            resources::resource_isolation,
            webhooks::webhook_outbox,
            webhooks::webhooks_roll_back_with_their_batch,
        ]);
    };
    (@wrappers [$($file:ident::$name:ident),* $(,)?]) => {
        $(
            #[doc = concat!("The scenario `", stringify!($name), "`.")]
            pub fn $name(store: &dyn $crate::Store) -> $crate::conformance::ScenarioRun<'_> {
                ::std::boxed::Box::pin(super::$file::$name(store))
            }
        )*
    };
    (@tests $attrs:tt $run:path [$($file:ident::$name:ident),* $(,)?]) => {
        $($crate::conformance_tests!(@test $attrs $name, $run);)*
    };
    (@test [$($attr:tt)*] $name:ident, $run:path) => {
        $($attr)*
        async fn $name() {
            $run($crate::conformance::scenarios::$name).await;
        }
    };
}
