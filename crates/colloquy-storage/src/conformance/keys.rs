//! Accounts, keys, access tokens, and what one account never sees of another's.

use super::support::*;
use crate::*;
use uuid::Uuid;

pub async fn keys_and_auth(store: &dyn Store) {
    let before = store.count_accounts().await.unwrap();
    let who = new_account(store, true).await;
    assert_eq!(store.count_accounts().await.unwrap(), before + 1);
    let hash = format!("hash-{}", who.api_key_id);
    let p = store.principal_by_key_hash(&hash).await.unwrap();
    assert_eq!(p, Some(who.clone()), "a live key resolves to its principal");
    assert_eq!(store.principal_by_key_hash("nope").await.unwrap(), None);

    let (p, secret) = store.secret_hash_for_key(&hash).await.unwrap().unwrap();
    assert_eq!(p, who.clone());
    assert_eq!(secret, format!("secret-{}", who.api_key_id));

    store
        .insert_access_token("tok-1", who.api_key_id, 10_000)
        .await
        .unwrap();
    assert_eq!(
        store.principal_by_token_hash("tok-1", 9_999).await.unwrap(),
        Some(who.clone())
    );
    assert_eq!(
        store
            .principal_by_token_hash("tok-1", 10_000)
            .await
            .unwrap(),
        None,
        "an expired token is refused"
    );
    store
        .insert_access_token("tok-2", who.api_key_id, 10_000)
        .await
        .unwrap();
    assert!(store.delete_access_token("tok-2").await.unwrap());
    assert!(!store.delete_access_token("tok-2").await.unwrap());
    assert_eq!(
        store.principal_by_token_hash("tok-2", 9_000).await.unwrap(),
        None,
        "a deleted (signed-out) token is refused"
    );

    // A second key on the same account, then revoke the first.
    let second = NewApiKey {
        id: Uuid::new_v4(),
        user_id: who.user_id,
        name: Some("second".into()),
        prefix: "second00".into(),
        key_hash: "hash-second".into(),
        secret_hash: "secret-second".into(),
        created_at: 2,
    };
    store.add_api_key(&second).await.unwrap();
    let dup = store.add_api_key(&second).await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate key: {dup:?}"
    );
    let keys = store.list_api_keys().await.unwrap();
    assert!(keys
        .iter()
        .any(|k| k.id == second.id && k.name.as_deref() == Some("second")));

    assert!(store.revoke_api_key(who.api_key_id, 5).await.unwrap());
    assert!(!store.revoke_api_key(who.api_key_id, 6).await.unwrap());
    assert_eq!(store.principal_by_key_hash(&hash).await.unwrap(), None);
    assert_eq!(
        store.principal_by_token_hash("tok-1", 9_000).await.unwrap(),
        None,
        "a revoked key's tokens stop working"
    );
    assert!(store
        .principal_by_key_hash("hash-second")
        .await
        .unwrap()
        .is_some());
    let revoked = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == who.api_key_id)
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(5));
}

pub async fn tenancy(store: &dyn Store) {
    let alice = new_account(store, true).await;
    let bob = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let g = Uuid::new_v4();
    let (chat, _) = start_chat(store, &alice, GroupChoice::New(g), 1, None, instance).await;
    assert!(store.get_chat(bob.user_id, chat).await.unwrap().is_none());
    assert!(store
        .get_chat_group(bob.user_id, g)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .list_chats(bob.user_id, &ChatFilter::default(), page(0, 10, true))
            .await
            .unwrap()
            .total,
        0
    );
    let (_, out) = start_chat(store, &bob, GroupChoice::Resume(g), 2, None, instance).await;
    assert_eq!(
        out,
        OpOutcome::GroupNotFound,
        "another account's group cannot be resumed"
    );
    assert!(
        store
            .ensure_reconstructions(bob.user_id, &[chat], 3)
            .await
            .unwrap()
            .is_empty(),
        "no reconstruction for another account's chat"
    );
}
