//! Per-account limits of chat sessions on this server (`[limits]`): the client-message rate
//! (`max_messages_per_second_per_account`) and, for accounts whose chats are not stored,
//! the number of open chats (`max_concurrent_chats_per_account`; for every other account
//! the database counts `ACTIVE` chats over all servers when a chat starts).
//!
//! Both are in memory: a rate limit protects this server's own resources, and a
//! retention-disabled account's chats exist nowhere else. Memory stays bounded: an account's
//! entry is dropped once it has no open chat and its bucket is full again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use uuid::Uuid;

/// Accounts tracked at most before idle entries are swept.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug)]
struct Account {
    /// Messages that may still be sent now (a token bucket holding one second's worth).
    tokens: f64,
    refilled: Instant,
    /// Open chats on this server.
    open: u32,
}

/// The per-account counters of one server.
#[derive(Debug, Default)]
pub struct AccountLimits {
    accounts: Mutex<HashMap<Uuid, Account>>,
}

impl AccountLimits {
    /// Takes one message from the account's budget of `per_second` (0: unlimited); false
    /// when the account is over its rate and the message must be refused.
    pub fn allow_message(&self, user_id: Uuid, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let rate = f64::from(per_second);
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        sweep(&mut accounts);
        let acc = accounts.entry(user_id).or_insert(Account {
            tokens: rate,
            refilled: now,
            open: 0,
        });
        let elapsed = now.duration_since(acc.refilled).as_secs_f64();
        acc.tokens = (acc.tokens + elapsed * rate).min(rate);
        acc.refilled = now;
        if acc.tokens >= 1.0 {
            acc.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a new open chat of the account unless it already has `max` (0: unlimited) open
    /// on this server; the guard uncounts it when dropped.
    pub fn open_chat(self: &std::sync::Arc<Self>, user_id: Uuid, max: u32) -> Option<OpenChat> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        sweep(&mut accounts);
        let acc = accounts.entry(user_id).or_insert(Account {
            tokens: f64::MAX,
            refilled: Instant::now(),
            open: 0,
        });
        if max > 0 && acc.open >= max {
            return None;
        }
        acc.open += 1;
        Some(OpenChat {
            limits: self.clone(),
            user_id,
        })
    }

    fn close_chat(&self, user_id: Uuid) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(acc) = accounts.get_mut(&user_id) {
            acc.open = acc.open.saturating_sub(1);
        }
    }
}

/// Drops idle accounts (no open chat, bucket refilled) once many are tracked.
fn sweep(accounts: &mut HashMap<Uuid, Account>) {
    if accounts.len() > SWEEP_ABOVE {
        let now = Instant::now();
        accounts.retain(|_, a| a.open > 0 || now.duration_since(a.refilled).as_secs() < 2);
    }
}

/// One open chat counted by [`AccountLimits::open_chat`].
#[derive(Debug)]
pub struct OpenChat {
    limits: std::sync::Arc<AccountLimits>,
    user_id: Uuid,
}

impl Drop for OpenChat {
    fn drop(&mut self) {
        self.limits.close_chat(self.user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_rate_is_per_account_and_refills() {
        let limits = AccountLimits::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let allowed = (0..20).filter(|_| limits.allow_message(a, 5)).count();
        assert_eq!(allowed, 5, "a burst of one second's worth");
        assert!(
            limits.allow_message(b, 5),
            "another account is not affected"
        );
        std::thread::sleep(std::time::Duration::from_millis(450));
        let allowed = (0..20).filter(|_| limits.allow_message(a, 5)).count();
        assert!((2..=3).contains(&allowed), "refilled at 5/s: {allowed}");
        assert!(
            (0..1000).all(|_| limits.allow_message(a, 0)),
            "0 is no limit"
        );
    }

    #[test]
    fn open_chats_are_counted_until_dropped() {
        let limits = Arc::new(AccountLimits::default());
        let a = Uuid::new_v4();
        let first = limits.open_chat(a, 2).unwrap();
        let _second = limits.open_chat(a, 2).unwrap();
        assert!(limits.open_chat(a, 2).is_none());
        assert!(limits.open_chat(Uuid::new_v4(), 2).is_some());
        drop(first);
        assert!(limits.open_chat(a, 2).is_some());
        assert!(
            (0..10).all(|_| limits.open_chat(a, 0).is_some()),
            "0 is no limit"
        );
    }
}
